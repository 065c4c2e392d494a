"""The conversation: one module per domain, each declaring its intents and flows.

Importing this package registers every handler with the engine's registry.
"""
from handlers import activities, general, points, register, staff  # noqa: F401  (registers handlers)
from handlers import services, surveys  # noqa: F401
from handlers import merchants, rewards  # noqa: F401
from handlers import broadcasts  # noqa: F401
from handlers import appeals, appeals_staff, handover  # noqa: F401
from handlers.engine import dispatch  # noqa: F401
