"""Vendor-specific DataTransfer: chargers' own extensions, handled by plug-ins.

A handler is registered per vendorId and answers (status, data). With none
registered for a vendor the answer is UnknownVendorId, as OCPP 1.6 says; either
way the message is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# (message_id, data) -> (status, response data); status is one of
# Accepted, Rejected, UnknownMessageId, UnknownVendorId.
VendorHandler = Callable[[str | None, str | None], tuple[str, str | None]]


@dataclass
class DataTransferHandlers:
    by_vendor: dict[str, VendorHandler] = field(default_factory=dict)

    def register(self, vendor_id: str, handler: VendorHandler) -> None:
        self.by_vendor[vendor_id] = handler

    def answer(
        self, vendor_id: str, message_id: str | None, data: str | None
    ) -> tuple[str, str | None]:
        handler = self.by_vendor.get(vendor_id)
        if handler is None:
            return "UnknownVendorId", None
        return handler(message_id, data)
