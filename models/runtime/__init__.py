"""Running the model: the handle every part shares (`handle`), the hook names (`hook_names`) and
the plan of one pass's hooks (`run_plan`)."""
