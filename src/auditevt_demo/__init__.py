"""auditevt_demo: a sample Core API on top of the library, the main job of ``auditevt demo``.

The middleware, the relay, an admin endpoint and a Telemetry stand-in on loopback, with a load
of audited requests across several organizations. Needs the ``demo`` extra.
"""
