"""A ``sendmail -i -t`` stand-in for tlsrpt-reportd: hand the message on stdin to an SMTP port.

Usage: python sendmail_smtp.py PORT LOG CAFILE.  Sender and recipient come from the From:
and To: headers (as ``-t`` does); the bytes go unchanged to 127.0.0.1:PORT, over STARTTLS
(checked against CAFILE) when offered.  One line per message is appended to LOG: the
server's reply code, the recipient and the Subject.  Exit 0 only when the server said 250.
"""

from __future__ import annotations

import smtplib
import ssl
import sys
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr


def main(port: int, log: str, cafile: str) -> int:
    data = sys.stdin.buffer.read()
    headers = BytesHeaderParser().parsebytes(data)
    sender = parseaddr(headers.get("From", ""))[1]
    rcpts = [a for _, a in getaddresses(headers.get_all("To", []))]
    code, reply = 0, ""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("reporter.example")
            if smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context(cafile=cafile))
                smtp.ehlo("reporter.example")
            smtp.sendmail(sender, rcpts, data)
            code, reply = 250, "accepted"
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        code, reply = exc.smtp_code, error.decode(errors="replace") if isinstance(
            error, bytes) else str(error)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = 550, repr(exc.recipients)
    except OSError as exc:
        reply = repr(exc)
    with open(log, "a", encoding="utf-8") as out:
        subject = " ".join(str(headers.get("Subject", "")).split())  # unfolded
        out.write(f"{code} {','.join(rcpts)} | {subject} | {reply}\n")
    return 0 if code == 250 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
