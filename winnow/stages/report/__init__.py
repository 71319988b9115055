"""What users act on: the self-contained HTML report and the top flagged examples (inspect)."""

from winnow.stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "top_flagged": "winnow.stages.report.inspect",
    "render_report": "winnow.stages.report.render",
})
