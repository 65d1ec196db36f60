"""Exceptions raised by minigrad. All subclass RuntimeError, as torch's do, so torch-style
``except RuntimeError`` code keeps working, while tests can catch the precise kind."""


class MinigradError(RuntimeError):
    """Base class of every error minigrad raises on wrong use."""


class ShapeError(MinigradError):
    """Operand shapes do not fit the operation (the message names both shapes)."""


class DtypeError(MinigradError):
    """A dtype cannot do what was asked, e.g. an integer tensor that should require grad."""


class InplaceError(MinigradError):
    """An in-place change that would make a gradient wrong, or of a leaf that requires grad."""


class BackwardError(MinigradError):
    """backward()/grad() was called in a way the graph cannot answer."""


class GradcheckError(MinigradError):
    """gradcheck found an analytical gradient that disagrees with finite differences."""


class TargetError(MinigradError, IndexError):
    """A class index outside [0, C) given to a loss (also an IndexError, as torch's is)."""


class CheckpointError(MinigradError, ValueError):
    """A file or folder that is not a checkpoint minigrad can read: missing, truncated or corrupt,
    or weights that do not fit the model (the message names the file)."""
