"""The inspector: a Textual app over the engine.

Nothing here imports torch, TransformerLens or SAELens at module level: the
first screen paints before they load, and every engine call runs in a worker.
"""
