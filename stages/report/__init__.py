"""What users act on: the self-contained HTML report and the top flagged examples (inspect)."""

from stages.report.inspect import top_flagged
from stages.report.render import render_report

__all__ = ["render_report", "top_flagged"]
