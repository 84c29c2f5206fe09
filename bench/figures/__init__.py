"""One module per figure of issue 4; each ``measure(plan)`` returns report.Figure(s)."""
