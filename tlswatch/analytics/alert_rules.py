"""The alert rules in plain language, with the thresholds in force (the Alerts page)."""

from __future__ import annotations

from tlswatch.analytics.alerts import KINDS, STS_PROBLEMS, AlertRules


def describe(rules: AlertRules) -> list[dict[str, str]]:
    """One {kind, when} per alert kind, in the order of ``KINDS``."""
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
    return [{"kind": kind, "when": when.get(kind, "")} for kind in KINDS]
