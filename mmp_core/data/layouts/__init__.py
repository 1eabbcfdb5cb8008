"""Raw dataset layouts, one reader per module (docs/data.md); `mmp_core.data.convert` picks one per dataset.

Every reader takes (root, spec, ignore_labels), exposes `spec` (label names read from the data, where the
layout names them) and `tasks(split)`: one `Task` (or a `BadSampleError`) per listed sample, in order.
"""
