-- wrk script for bench/receiver_bench.py: POST a TLS report with a unique report-id.
local counter = 0
local prefix = "wrk"

function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end

function init(args)
  if args[1] then prefix = args[1] end
end

function request()
  counter = counter + 1
  local rid = prefix .. "-" .. tid .. "-" .. counter
  local body = '{"organization-name":"Load Tester","report-id":"' .. rid .. '",' ..
    '"date-range":{"start-datetime":"2026-11-26T00:00:00Z","end-datetime":"2026-11-26T23:59:59Z"},' ..
    '"contact-info":"load@example.net","policies":[{"policy":{"policy-type":"sts",' ..
    '"policy-domain":"load.example","policy-string":["version: STSv1","mode: enforce",' ..
    '"mx: mx.load.example","max_age: 86400"]},"summary":{"total-successful-session-count":100,' ..
    '"total-failure-session-count":1},"failure-details":[{"result-type":"certificate-expired",' ..
    '"receiving-mx-hostname":"mx.load.example","failed-session-count":1}]}]}'
  return wrk.format("POST", "/v1/reports", {["Content-Type"] = "application/tlsrpt+json"}, body)
end
