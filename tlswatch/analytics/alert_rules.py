"""The alert rules in plain language, with the thresholds in force (the Alerts page)."""

from __future__ import annotations

from tlswatch.analytics.alerts import CHECK_KINDS, KINDS, STS_PROBLEMS, WATCH_KINDS, AlertRules


def describe(rules: AlertRules, *, check_cert_days: int | None = None,
             acme_alert_days: int | None = None, dns_updates: bool = False
             ) -> list[dict[str, str]]:
    """One {kind, when} per alert kind, in the order of ``KINDS``; then the kinds of the
    daily MTA-STS/TLS-RPT checks when they run (``check_cert_days`` given)."""
    when = {
        "new_result_type": "a result type never reported before for the domain",
        "low_success_rate": f"a day's success rate below {rules.success_threshold:.1%} "
                            "(setting alert_success_threshold)",
        "failure_spike": f"a day's failed sessions over {rules.spike_factor:g} times the "
                         f"trailing {rules.spike_days}-day daily average, and at least "
                         f"{rules.spike_minimum} (setting alert_spike_factor)",
        "reporter_silent": f"a reporter that sent on {rules.daily_min} of {rules.daily_days} "
                           f"days silent for {rules.silent_days} days or more (setting "
                           "alert_silent_days)",
        "sts_policy_problem": f"any of {', '.join(STS_PROBLEMS)}: the MTA-STS policy host is "
                              "broken for every sender at once",
        "conflicting_duplicate": "a report sent again under the same id with different "
                                 "content (a forgery, or a sender that changed it)",
    }
    kinds: tuple[str, ...] = KINDS
    if check_cert_days is not None:
        kinds += CHECK_KINDS
        when.update({
            "check_new_error": "a daily check finds an error it did not find the time before",
            "check_cert_expiring": f"an MX's or the mta-sts host's certificate expires within "
                                   f"{check_cert_days} days (setting check_cert_days)",
            "check_sts_id_stale": "the _mta-sts TXT id did not change although the policy "
                                  "served did (senders keep the old policy cached)",
            "check_tlsrpt_rua": "the _smtp._tls record is missing, or does not list this "
                                "deployment first (Microsoft sends only to the first rua)",
        })
    kinds += WATCH_KINDS
    when["policy_mx_not_covered"] = ("the daily MX watcher finds a live MX of a hosted domain "
                                     "that the policy's mx patterns do not cover (it stages "
                                     "an updated policy: policy apply-staged)")
    if acme_alert_days is not None:
        kinds += ("acme_renewal_failing",)
        when["acme_renewal_failing"] = (f"a certificate obtained by ACME expires within "
                                        f"{acme_alert_days} days and its renewal failed "
                                        "(setting acme_alert_days)")
    if dns_updates:
        kinds += ("dns_update_failing",)
        when["dns_update_failing"] = ("the DNS update publishing a hosted policy's new id "
                                      "failed again when 'serve' retried it (setting "
                                      "dns_update_zone)")
    return [{"kind": kind, "when": when.get(kind, "")} for kind in kinds]
