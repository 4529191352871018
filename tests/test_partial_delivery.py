"""A broker that stops answering mid-send: the producer names exactly which events were
delivered and which were not, within the time it was given, and no traceback follows."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import make_event

from ledger.errors import PartialDeliveryError
from ledger.transport.broker import LocalBroker
from ledger.transport.producer import LedgerProducer
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.keyring import Signer


def test_a_paused_broker_gets_the_delivered_and_the_undelivered_named(tmp_path: Path) -> None:
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        settings = KafkaSettings(bootstrap=broker.bootstrap, topic="ledger.events")
        ensure_topics(settings, {settings.topic: 1})
        first, second = make_event(service="checkout"), make_event(service="checkout")
        producer = LedgerProducer(Signer.generate("ci"), settings)
        try:
            producer.emit(first)
            producer._pending[-1][1].get(timeout=30)  # acknowledged, not yet flushed
            os.kill(broker.pid, signal.SIGSTOP)  # the broker stops answering
            try:
                producer.emit(second)
                with pytest.raises(PartialDeliveryError) as caught:
                    producer.flush(2)
            finally:
                os.kill(broker.pid, signal.SIGCONT)
        finally:
            producer.close(30)
    assert caught.value.failed == [second.id]
    assert [d.event_id for d in caught.value.delivered] == [first.id]
    assert "1 of 2 event(s) not acknowledged" in caught.value.message
    assert "1 delivered" in caught.value.message
    assert "within 2 s" in caught.value.message
