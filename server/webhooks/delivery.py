"""The delivery worker: at least once, with capped exponential backoff.

Jobs are analysis ids in a queue of their own (a second ``RedisStreamQueue`` under
``vidscan:webhook-``, in memory when embedded), so a delivery survives a restart the
way an analysis job does: a postponed one waits in Redis, one in the hands of a
process that died is reclaimed. For each job: read the analysis; not final yet (the
announcer enqueues just before the final write) -> look again soon, no attempt used;
final -> POST the signed event; 2xx ends it; anything else (another status, a refused
connection, a timeout) is retried after ``retry_delay`` until ``max_attempts`` or
``max_age``, then dropped with a log line and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import timedelta

from server import metrics
from server.analysis.queue import Job, JobQueue, retry_delay
from server.clock import Clock
from server.errors import VidscanError
from server.records.model import AnalysisRecord
from server.records.port import AnalysisRepository
from server.webhooks.event import analysis_event
from server.webhooks.policy import CallbackPolicy
from server.webhooks.sender import WebhookSender
from server.webhooks.signing import WebhookSigner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryRules:
    retry_base_seconds: float
    retry_max_seconds: float
    max_attempts: int
    max_age: timedelta


class DeliveryWorker:
    def __init__(
        self,
        *,
        queue: JobQueue,
        analyses: AnalysisRepository,
        sender: WebhookSender,
        signer: WebhookSigner,
        policy: CallbackPolicy,
        rules: DeliveryRules,
        clock: Clock,
        name: str,
    ) -> None:
        self._queue = queue
        self._analyses = analyses
        self._sender = sender
        self._signer = signer
        self._policy = policy
        self._rules = rules
        self._clock = clock
        self._name = name

    async def run_forever(self, *, stop: asyncio.Event) -> None:
        """Runs until ``stop`` is set; an attempt in flight is finished first (it is
        bounded by the sender's timeout)."""
        while not stop.is_set():
            try:
                job = await self._queue.receive(consumer=self._name, wait_seconds=1.0)
                if job is not None:
                    await self._handle(job)
            except VidscanError:
                log.exception("webhook worker %s: queue trouble; retrying", self._name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._rules.retry_base_seconds)

    async def _handle(self, job: Job) -> None:
        try:
            analysis = await self._analyses.get(job.analysis_id)
        except VidscanError as exc:
            log.warning("webhook for analysis %s: %s; later", job.analysis_id, exc.message)
            await self._postpone(job, counted=False)
            return
        if analysis is None or not analysis.callback_url:
            await self._drop(job, "no analysis with a callback")
            return
        moment = analysis.completed_at or analysis.created_at
        if self._clock() - moment > self._rules.max_age:
            await self._drop(job, f"older than {self._rules.max_age}")
            return
        if not analysis.status.terminal:  # announced, final write still to come
            await self._postpone(job, counted=False)
            return
        if not self._policy.allows(analysis.callback_url):
            await self._drop(job, "its host is no longer allowed for callbacks")
            return
        await self._attempt(job, analysis)

    async def _attempt(self, job: Job, analysis: AnalysisRecord) -> None:
        try:
            event = analysis_event(analysis)
        except VidscanError as exc:  # a stored result that cannot be read
            await self._drop(job, exc.message)
            return
        attempt = await self._sender.post(
            analysis.callback_url,
            body=event.body,
            headers=self._signer.headers(
                message_id=event.message_id,
                timestamp=int(self._clock().timestamp()),
                body=event.body,
            ),
        )
        number = job.retries + 1
        if attempt.delivered:
            await self._queue.ack(job)
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            log.info("webhook %s delivered (attempt %d)", event.message_id, number)
        elif number >= self._rules.max_attempts:
            await self._drop(job, f"{number} attempts failed, the last: {attempt.error}")
        else:
            delay = await self._postpone(job, counted=True)
            metrics.WEBHOOK_DELIVERIES.labels("retried").inc()
            log.warning(
                "webhook %s attempt %d failed (%s); again in %.1fs",
                event.message_id,
                number,
                attempt.error,
                delay,
            )

    async def _postpone(self, job: Job, *, counted: bool) -> float:
        """Back into the queue after the backoff for this attempt; one that is not
        counted keeps the job's attempts (the queue adds one, so take one first)."""
        rules = self._rules
        if counted:
            delay = retry_delay(
                job.retries,
                base_seconds=rules.retry_base_seconds,
                max_seconds=rules.retry_max_seconds,
            )
            await self._queue.retry_later(job, delay_seconds=delay)
        else:
            delay = rules.retry_base_seconds
            await self._queue.retry_later(
                replace(job, retries=job.retries - 1), delay_seconds=delay
            )
        return delay

    async def _drop(self, job: Job, why: str) -> None:
        await self._queue.ack(job)
        metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
        log.error("webhook for analysis %s dropped: %s", job.analysis_id, why)
