"""scanmail-fwd: delivers SPOOL/outgoing to the internal mail server."""
