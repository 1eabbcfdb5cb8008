"""The kinds of classification task mmp trains (what datasets declare and the prompt config accepts), and the
metric each is judged by: model selection, the headline and promotion all read it from here."""

TASKS = ("multilabel", "multiclass", "binary")
PRIMARY_METRIC = {"multilabel": "f1_macro", "multiclass": "accuracy", "binary": "auroc"}
