"""A subscription whose publish callback hands each PublishResult to the driver as is.

asyncua 2.1's handler path schedules one asyncio task per data change; this skips that layer
(and its per-sample event objects), so the driver decodes straight into its columnar batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["make_subscription"]

# Keepalives every ~5 s whatever the publishing interval, so a silent server is noticed.
KEEPALIVE_S = 5.0


async def make_subscription(
    client: Any,
    period_ms: float,
    on_publish: Callable[[Any], None],
    keepalive_s: float = KEEPALIVE_S,
) -> Any:
    """Create a subscription on `client` whose notifications all go to `on_publish`.

    The server answers at least every `keepalive_s` (an empty PublishResponse when nothing
    changed), which is how the driver knows a quiet session is still alive.
    """
    from asyncua.common.subscription import Subscription

    from drivers.opcua.security import ua_module

    ua = ua_module()

    class DirectSubscription(Subscription):
        revised_interval_ms = 0.0  # the publishing interval the server granted

        async def publish_callback(self, publish_result: Any) -> None:
            # Keep the fields asyncua's stale-subscription watchdog reads.
            self.last_publish_at = time.monotonic()
            message = publish_result.NotificationMessage
            if message.NotificationData:
                self.last_sequence_number = int(message.SequenceNumber)
            on_publish(publish_result)

    keepalive = max(1, math.ceil(keepalive_s * 1000.0 / period_ms))
    params = ua.CreateSubscriptionParameters()
    params.RequestedPublishingInterval = period_ms
    params.RequestedMaxKeepAliveCount = keepalive
    params.RequestedLifetimeCount = max(keepalive * 3, math.ceil(60_000.0 / period_ms))
    params.MaxNotificationsPerPublish = 0  # no limit: one response carries a whole cycle
    params.PublishingEnabled = True
    params.Priority = 0
    # A handler object (unused) keeps asyncua from allocating its iterator queue.
    handler: Any = _NoHandler()
    sub = DirectSubscription(client.uaclient.session, params, handler=handler)
    result = await sub.init()
    # What the server granted (it may publish less often than asked): read by the driver.
    sub.revised_interval_ms = float(getattr(result, "RevisedPublishingInterval", 0.0) or 0.0)
    # Tracked like asyncua's own subscriptions so its stale-subscription watchdog covers it.
    client._subscriptions.append(sub)
    return sub


class _NoHandler:
    """Placeholder handler: DirectSubscription never dispatches to it."""
