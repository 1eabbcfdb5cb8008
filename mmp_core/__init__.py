"""mmp: missing-aware multimodal prompts over a frozen ViLT backbone."""

__version__ = "0.1.0"
