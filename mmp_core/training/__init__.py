"""Training: the DeepSpeed loop that trains one method's prompts over the frozen backbone."""
