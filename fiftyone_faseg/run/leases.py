"""One writer per field: a lease on ``(dataset, field)`` stored in the database.

A run, rerun, re-threshold or Ray run takes its field's lease before it judges the
field's existing labels, and holds it until the field's record is final, so two
writers (threads, processes, machines) never interleave their writes in one field. The
lease is one document of the ``faseg_leases`` collection of FiftyOne's database, taken
with one conditional update (free, or expired): any number of processes can race for
it and exactly one wins; the others are refused with who holds it (operation, host,
process, since when) and what to do.

The holder renews the lease (its heartbeat) from a background thread and before every
batch it writes; a holder that stops without releasing it (killed, machine lost) stops
renewing, and its lease can be taken over once it expires (``ttl_s`` after the last
heartbeat). A holder whose lease was taken over refuses to write another batch.

Every time a lease holds (``since``, ``heartbeat``, ``expires``) is the database server's
clock (``$$NOW`` in the updates and queries), never a client's: writers on machines whose
clocks disagree (a Ray driver, an App server, a laptop) still agree on when a lease expires.

Example usage::

    from fiftyone_faseg.run.leases import FieldLease

    with FieldLease(dataset, "faseg", "re-threshold"):
        ...  # write the field
"""

import logging
import os
import socket
import threading
import uuid
from datetime import datetime

logger = logging.getLogger(__name__)

COLLECTION = "faseg_leases"
DEFAULT_TTL_S = 120.0


class FieldBusyError(RuntimeError):
    """Another writer holds the field's lease: nothing was written."""


class LeaseLostError(RuntimeError):
    """This writer's lease expired and another writer took the field over: it stops writing."""


def _collection():
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[COLLECTION]


def _expires_in(ttl_s):
    """``$$NOW + ttl_s``: the expiry a heartbeat sets, on the database server's clock."""
    return {"$add": ["$$NOW", int(ttl_s * 1000)]}


_LIVE = {"$expr": {"$gte": ["$expires", "$$NOW"]}}  # not yet expired, on the server's clock
_EXPIRED = {"$expr": {"$lt": ["$expires", "$$NOW"]}}


def lease_key(dataset, field):
    return "%s/%s" % (dataset._doc.id, field)


def current_holder(dataset, field):
    """The live lease document of ``field`` (``operation``, ``host``, ``pid``, ``since``,
    ``heartbeat``, ``expires``), or None when nobody writes it."""
    return _collection().find_one({"_id": lease_key(dataset, field), **_LIVE})


def describe_holder(doc):
    return "%s (host %s, process %s, since %s UTC, last heartbeat %s UTC)" % (
        doc.get("operation") or "writer", doc.get("host"), doc.get("pid"),
        _fmt(doc.get("since")), _fmt(doc.get("heartbeat")))


def _fmt(when):
    return when.strftime("%Y-%m-%d %H:%M:%S") if isinstance(when, datetime) else when


class FieldLease:
    """The lease of one field of one dataset (see the module's docstring).

    Args:
        dataset: a :class:`fiftyone.core.dataset.Dataset`
        field: the field written
        operation: what writes it, as the refusal of another writer names it (e.g. "run")
        ttl_s (DEFAULT_TTL_S): seconds after the last heartbeat after which the lease
            may be taken over
    """

    def __init__(self, dataset, field, operation, ttl_s=None):
        self.key = lease_key(dataset, field)
        self.dataset_name = dataset.name
        self.field = field
        self.operation = operation
        self.ttl_s = float(ttl_s or DEFAULT_TTL_S)
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost = False
        self._stop = None
        self._thread = None

    def acquire(self):
        """Takes the lease (free or expired) or raises :class:`FieldBusyError`."""
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        update = [{"$set": {
            "owner": self.token, "operation": self.operation, "dataset": self.dataset_name,
            "field": self.field, "host": socket.gethostname(), "pid": os.getpid(),
            "since": "$$NOW", "heartbeat": "$$NOW", "expires": _expires_in(self.ttl_s),
        }}]
        leases = _collection()
        previous = None  # the expired lease this writer took over
        for _ in range(3):
            try:  # a free field: the upsert inserts (a lease document always has an owner)
                leases.update_one({"_id": self.key, "owner": {"$exists": False}}, update, upsert=True)
                break
            except DuplicateKeyError:
                pass
            # held: take it over only if it expired (MongoDB allows no $expr in an upsert's query)
            previous = leases.find_one_and_update({"_id": self.key, **_EXPIRED}, update,
                                                  return_document=ReturnDocument.BEFORE)
            if previous is not None or leases.find_one({"_id": self.key}) is not None:
                break
            # released between the two steps: try again
        if leases.find_one({"_id": self.key, "owner": self.token}) is None:
            holder = leases.find_one({"_id": self.key}) or {}
            raise FieldBusyError(
                "field '%s' of dataset '%s' is being written by another FA-Seg %s: wait until it finishes (or "
                "stop it), or write to another field. A writer that stopped without finishing loses the field "
                "%d s after its last heartbeat (then a rerun with skip_existing=True completes it)"
                % (self.field, self.dataset_name, describe_holder(holder), self.ttl_s)
            )
        if previous is not None:
            logger.warning("field '%s' of dataset '%s': took over the expired lease of %s", self.field,
                           self.dataset_name, describe_holder(previous))
        self.held, self.lost = True, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="faseg-lease", daemon=True)
        self._thread.start()
        return self

    def renew(self):
        """Renews the lease (a heartbeat); raises :class:`LeaseLostError` when another
        writer took it over."""
        if not self.held:
            return
        if not self.lost:
            done = _collection().update_one({"_id": self.key, "owner": self.token},
                                            [{"$set": {"heartbeat": "$$NOW", "expires": _expires_in(self.ttl_s)}}])
            self.lost = not done.matched_count
        if self.lost:
            holder = _collection().find_one({"_id": self.key})
            raise LeaseLostError(
                "field '%s' of dataset '%s' was taken over by %s after this writer's lease expired: this writer "
                "stopped; check the field's record and rerun with skip_existing=True if needed"
                % (self.field, self.dataset_name, describe_holder(holder) if holder else "another writer")
            )

    def release(self):
        """Gives the lease back (once; a no-op when not held)."""
        if not self.held:
            return
        self.held = False
        self._stop.set()
        _collection().delete_one({"_id": self.key, "owner": self.token})

    def _beat(self):
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except LeaseLostError as e:
                logger.error("%s", e)
                return
            except Exception as e:  # a database hiccup: try again at the next beat
                logger.warning("could not renew the lease of field '%s': %s", self.field, e)

    def __enter__(self):
        if self._stop is None:  # never taken yet
            self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __getstate__(self):
        # a copy shipped elsewhere (a Ray actor's plan) is inert: only the holder renews and releases
        return dict(self.__dict__, held=False, _stop=None, _thread=None)


class Leases:
    """Several leases taken together (all or none), released together."""

    def __init__(self, leases):
        self.leases = list(leases)

    def __enter__(self):
        taken = []
        try:
            for lease in self.leases:
                taken.append(lease.acquire())
        except BaseException:
            for lease in taken:
                lease.release()
            raise
        return self

    def renew(self):
        for lease in self.leases:
            lease.renew()

    def __exit__(self, *exc):
        for lease in self.leases:
            lease.release()
        return False
