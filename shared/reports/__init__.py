"""Usage report: facts per visit from the writeback queue's events (``recorder``, ``facts``), table
``ReportVisits`` (``store``), daily summaries ``ReportDays`` (``days``, ``totals``), per-configuration
settings ``ReportSettings`` (``preferences``), retention (``retention``), and the report the portal shows
and exports (``service``, ``charts``)."""
