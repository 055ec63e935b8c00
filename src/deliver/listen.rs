//! `hookrelay listen`: relay a bin to a local target over the WebSocket stream.
