"""The ipc package's errors.

The hierarchy::

    IpcError                    root of every error the package defines
    ├── ChannelClosed           the other end is gone (process exit, pipe EOF) or was closed (also a ConnectionError)
    ├── CallError               a call failed on the other side, timed out, or its peer went away (also a RuntimeError)
    │   └── UnknownCall         the receiving process has no Call type of that name
    └── FramingError            the byte stream does not follow the framing format (also a ValueError)
        └── FrameTooLarge       a payload to send is over the frame limit the receiving end enforces

All are public and exported from ``ipc``; the stdlib bases stay so that code catching ``ConnectionError``,
``RuntimeError`` or ``ValueError`` keeps catching them. This module imports nothing of the package.
"""

from __future__ import annotations

__all__ = ["CallError", "ChannelClosed", "FrameTooLarge", "FramingError", "IpcError", "UnknownCall"]


class IpcError(Exception):
    """The root of the ipc package's errors (see the tree above)."""


class ChannelClosed(IpcError, ConnectionError):
    """The other end of the channel is gone (process exit, pipe EOF) or it was closed."""


class CallError(IpcError, RuntimeError):
    """A call failed on the other side, timed out, or its peer went away."""


class UnknownCall(CallError):
    """The receiving process has no :class:`Call` type of that name (it did not import it)."""


class FramingError(IpcError, ValueError):
    """The byte stream does not follow the framing format."""


class FrameTooLarge(FramingError):
    """A payload to send is over the frame limit the receiving end enforces."""
