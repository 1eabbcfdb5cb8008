"""The kinds of classification task mmp trains: what the datasets declare and the prompt config accepts."""

TASKS = ("multilabel", "multiclass", "binary")
