"""The model: a frozen backbone and the missing-aware prompts over it."""
