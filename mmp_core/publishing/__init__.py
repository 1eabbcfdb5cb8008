"""Publishing: a finished DVC run turned into a published run, its report and dashboard, and the champion."""
