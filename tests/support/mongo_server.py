#!/usr/bin/env python3
"""A small MongoDB wire-compatible server for the integration tests.

mockupdb (MongoDB's wire-protocol test library) parses OP_MSG requests and
encodes replies; every command is then executed against ONE in-process
mongomock client while holding ONE global lock, so each command is atomic
(as a single-document write is in MongoDB).

Usage: python mongo_server.py [--port N] [--replset N [--set-name NAME]]
           [--node-offset I=MS]... [--hello-offset APPNAME=MS]... [--verbose]

Binds 127.0.0.1 (port 0 = any free port), prints exactly one line on stdout
once it accepts connections, `PORT <n>` (standalone) or `PORT <p0> <p1> ...`
(replica set, one port per member, member 0 first), and serves until stdin
reaches EOF or SIGTERM/SIGINT arrives.  --verbose logs every command to stderr.

Deployments:
- standalone (default): a mongod 6.0 (maxWireVersion 17) without sessions: no
  logicalSessionTimeoutMinutes, so the driver sends no lsid and does not retry
  writes (retryable reads still apply, as against a real standalone).
- replica set (--replset N): N members on N ports, all serving the ONE data set
  under the one lock (replication is instant).  hello answers like a member of
  set NAME (default "rs0"): setName, hosts, me, primary, isWritablePrimary,
  secondary, setVersion, electionId (only on the primary, grows with every
  election), topologyVersion (every member's counter grows whenever the primary
  changes) and logicalSessionTimeoutMinutes, so the driver uses sessions and
  retryable writes (lsid, txnNumber and $clusterTime are accepted and ignored;
  read and write concerns are ignored: every write is instantly majority
  committed).  An awaitable hello (topologyVersion + maxAwaitTimeMS, sent by
  the driver's streaming monitor) waits until that member's topologyVersion
  changes or maxAwaitTimeMS passes, then replies (never moreToCome).  Member 0
  starts as primary.  A member that is not primary answers writes with
  NotWritablePrimary (10107, label RetryableWriteError on a retryable write,
  i.e. one with txnNumber) and reads without secondaryOk (no $readPreference
  other than primary) with NotPrimaryNoSecondaryOk (13435).

Clocks: every server-side "now" is node_now(node): this process's wall clock
(libfaketime applies) plus the member's offset (--node-offset I=MS).  It stamps
$currentDate (Date and Timestamp) in the writes a member applies, and its hello
and serverStatus localTime.  A per-appName offset (--hello-offset APPNAME=MS)
is added to localTime only, for the connections whose handshake named that
appName: a mongos whose clock runs ahead of the data node's that stamps
$currentDate.

Test commands (on the admin db; offsets may be negative, 0 removes one):
- {failoverTestHelloOffset: "<appName>", offsetMs: MS}
- {failoverTestNodeOffset: I, offsetMs: MS}
- {failoverTestStepDown: 1, newPrimary: I, electionDelayMs: MS} (replica set;
  any member): the primary steps down now and member I (default: the one after
  the old primary) is elected after electionDelayMs (default 0), with no primary
  in between.
- {replSetStepDown: secs} (replica set, on the primary, as in MongoDB): steps
  down and the next member (index + 1, wrapping) is elected at once; secs is
  checked but not enforced.

Test-mode fail point (`configureFailPoint` on the admin db, as mongod with
enableTestCommands=1): only `failCommand` is implemented, with modes "off",
"alwaysOn", {times: n}, {skip: n}, {activationProbability: p} and data fields
failCommands, appName, blockConnection/blockTimeMS, closeConnection,
errorCode, errorLabels and writeConcernError.  Other fail point names are
accepted as no-ops (ok: 1).  hello/isMaster and configureFailPoint are never
failed.  Fail points are global: they apply to every member.

Not supported: transactions, getMore on real cursors (every reply holds the
whole result with cursor id 0, so results must fit in 16 MB), TTL expiry,
collation, arrayFilters, `$$NOW` in pipeline updates (mongomock ignores it).
"""
import argparse
import datetime
import itertools
import os
import random
import signal
import sys
import threading
import time
import traceback

os.environ.setdefault("MONGODB", "6.0.0")  # mongomock emulates this version

import mockupdb  # noqa: E402
import mongomock  # noqa: E402
from bson.int64 import Int64  # noqa: E402
from bson.objectid import ObjectId  # noqa: E402
from bson.timestamp import Timestamp  # noqa: E402
from mongomock import collection as mm_collection  # noqa: E402
from mongomock import filtering  # noqa: E402
from mongomock import helpers as mm_helpers  # noqa: E402

LOCK = threading.Lock()  # one global lock: every command, fail point and role change
TOPOLOGY_CHANGED = threading.Condition(LOCK)  # notified when the primary changes
CLIENT = mongomock.MongoClient()
STARTED = time.time()
VERBOSE = False
MAX_BSON = 16 * 1024 * 1024

OPCOUNTERS = dict.fromkeys(("insert", "query", "update", "delete", "getmore", "command"), 0)
CONNECTIONS = {"current": 0, "totalCreated": 0}
FAILPOINT = None  # active failCommand: {"mode": ..., "data": ..., "left": n}
NEVER_FAILED = {"hello", "isMaster", "configureFailPoint"}


class Node:
    """One member (the only one when standalone): its clock and topologyVersion."""

    def __init__(self, index):
        self.index = index
        self.offset_ms = 0  # added to this process's wall clock: node_now(self)
        self.host = None  # "127.0.0.1:<port>" once bound
        self.process_id = ObjectId()
        self.counter = 0  # topologyVersion.counter


NODES = []  # [Node]: one when standalone
REPLSET = None  # replica set: {"name", "primary": index or None, "term", "election"}
HELLO_OFFSETS = {}  # appName -> ms added to hello localTime on its connections
CLOCK_NODE = None  # the member whose command runs (set under LOCK): it stamps $currentDate
# Commands a member that is not primary refuses (writes) or serves only with
# secondaryOk (reads), as a real replica set member does.
WRITE_COMMANDS = {"insert", "update", "delete", "findAndModify", "create", "createIndexes",
                  "dropIndexes", "drop", "dropDatabase"}
READ_COMMANDS = {"find", "count", "aggregate", "distinct", "listCollections", "listIndexes",
                 "listDatabases"}

CODE_NAMES = {
    1: "InternalError", 2: "BadValue", 6: "HostUnreachable", 7: "HostNotFound",
    8: "UnknownError", 9: "FailedToParse", 11: "UserNotFound", 13: "Unauthorized",
    14: "TypeMismatch", 20: "IllegalOperation", 26: "NamespaceNotFound",
    43: "CursorNotFound", 48: "NamespaceExists", 50: "MaxTimeMSExpired",
    59: "CommandNotFound", 66: "ImmutableField", 89: "NetworkTimeout",
    91: "ShutdownInProgress", 112: "WriteConflict", 189: "PrimarySteppedDown",
    238: "NotImplemented", 262: "ExceededTimeLimit", 10107: "NotWritablePrimary",
    11000: "DuplicateKey", 11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange", 13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary", 76: "NoReplicationEnabled",
}


class CommandError(Exception):
    """Raised by a command handler to produce an {ok: 0, code, errmsg} reply."""

    def __init__(self, code, errmsg):
        super().__init__(errmsg)
        self.code = code


def log(msg):
    if VERBOSE:
        print(msg, file=sys.stderr, flush=True)


def node_now(node):
    """The one source of "now" on the server: the wall clock plus node's offset."""
    offset = datetime.timedelta(milliseconds=node.offset_ms if node else 0)
    return datetime.datetime.now(datetime.timezone.utc) + offset


def conn_now(conn):
    """localTime as hello/serverStatus report it on this connection: its member's
    clock plus the hello offset of the connection's appName (a mongos's clock)."""
    offset = HELLO_OFFSETS.get(conn.get("app_name"), 0)
    return node_now(conn["node"]) + datetime.timedelta(milliseconds=offset)


def error_reply(code, errmsg):
    reply = {"ok": 0.0, "errmsg": errmsg, "code": code}
    if code in CODE_NAMES:
        reply["codeName"] = CODE_NAMES[code]
    return reply


def exception_to_error(exc):
    """(code, errmsg) for an exception raised by mongomock or a handler."""
    if isinstance(exc, CommandError):
        return exc.code, str(exc)
    if isinstance(exc, mongomock.DuplicateKeyError):
        msg = str(exc)
        return 11000, msg if msg.startswith("E11000") else "E11000 duplicate key error: " + msg
    if isinstance(exc, mongomock.CollectionInvalid):
        return 48, str(exc)
    if isinstance(exc, mongomock.OperationFailure):
        return exc.code or 2, str(exc)
    if isinstance(exc, NotImplementedError):
        return 238, "not supported by the test server: %s" % exc
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return 2, "%s: %s" % (type(exc).__name__, exc)
    return 1, "%s: %s" % (type(exc).__name__, exc)


# --- mongomock patch: keep Int64 through $inc (MongoDB: long + int = long) ---
_orig_inc = mm_collection._updaters["$inc"]


def _inc_keeping_int64(doc, field, value):
    key = int(field) if isinstance(doc, list) else field
    try:
        old = doc[key]
    except (KeyError, IndexError, TypeError):
        old = None
    _orig_inc(doc, field, value)
    try:
        new = doc[key]
    except (KeyError, IndexError, TypeError):
        return
    wide = isinstance(old, Int64) or isinstance(value, Int64)
    if wide and type(new) is int:
        doc[key] = Int64(new)


mm_collection._updaters["$inc"] = _inc_keeping_int64


# --- mongomock patch: $currentDate (and TTL) read node_now(CLOCK_NODE) ---------
def _mongomock_utcnow():
    return node_now(CLOCK_NODE).replace(tzinfo=None)  # mongomock keeps naive UTC


_LAST_TIMESTAMP = [0, 0]  # seconds, increment of the last {$type: "timestamp"}


def _mongomock_timestamp():
    secs = int(node_now(CLOCK_NODE).timestamp())
    _LAST_TIMESTAMP[:] = [secs, _LAST_TIMESTAMP[1] + 1 if _LAST_TIMESTAMP[0] == secs else 1]
    return Timestamp(secs, _LAST_TIMESTAMP[1])


mongomock.utcnow = _mongomock_utcnow  # called as mongomock.utcnow() by the updaters
mm_helpers.get_current_timestamp = _mongomock_timestamp


# --- helpers -----------------------------------------------------------------
def sort_spec(sort):
    """MongoDB sort document -> pymongo-style list, minus $natural/$meta keys."""
    if not sort:
        return None
    spec = [(k, int(v)) for k, v in sort.items()
            if not k.startswith("$") and not isinstance(v, dict)]
    return spec or None


def cursor_reply(ns, docs):
    # The cursor id must be an Int64: a plain 0 would be encoded as int32.
    return {"cursor": {"firstBatch": list(docs), "id": Int64(0), "ns": ns}, "ok": 1.0}


def project(coll, doc, fields):
    if doc is None or not fields:
        return doc
    return coll._copy_only_fields(doc, dict(fields), dict)


def upsert_query(query):
    """The query with the equality conditions of its `$and` clauses also at the
    top level (same meaning), so that mongomock seeds an upserted document with
    them as MongoDB does (mongomock only looks at top-level fields: an upsert
    filtered on {$and: [{_id: "x"}, ...]} would otherwise get a generated _id)."""
    if not isinstance(query, dict) or not isinstance(query.get("$and"), list):
        return query
    lifted = dict(query)
    for clause in query["$and"]:
        for key, value in upsert_query(clause).items():
            operator = isinstance(value, dict) and any(k.startswith("$") for k in value)
            if not key.startswith("$") and not operator and key not in lifted:
                lifted[key] = value
    return lifted


def is_operator_update(update):
    return isinstance(update, list) or (bool(update) and next(iter(update)).startswith("$"))


# --- commands: handler(db, cmd, conn) -> reply document -----------------------
def cmd_hello(db, cmd, conn):
    app = (cmd.get("client") or {}).get("application") or {}
    if "name" in app:
        conn["app_name"] = app["name"]
    if REPLSET is not None:
        await_topology_change(cmd, conn["node"])
    reply = {
        "helloOk": True, "ismaster": True, "isWritablePrimary": True,
        "maxBsonObjectSize": MAX_BSON, "maxMessageSizeBytes": 48000000,
        "maxWriteBatchSize": 100000, "localTime": conn_now(conn), "connectionId": conn["id"],
        "minWireVersion": 0, "maxWireVersion": 17, "readOnly": False, "ok": 1.0,
    }
    if REPLSET is not None:
        reply.update(member_hello(conn["node"]))
    return reply


# --- replica set ----------------------------------------------------------------
def topology_version(node):
    return {"processId": node.process_id, "counter": Int64(node.counter)}


def member_hello(node):
    """The replica-set fields of node's hello reply."""
    primary = REPLSET["primary"]
    is_primary = primary == node.index
    fields = {
        "setName": REPLSET["name"], "setVersion": 1, "hosts": [n.host for n in NODES],
        "me": node.host, "ismaster": is_primary, "isWritablePrimary": is_primary,
        "secondary": not is_primary, "topologyVersion": topology_version(node),
        "logicalSessionTimeoutMinutes": 30,
    }
    if primary is not None:
        fields["primary"] = NODES[primary].host
    if is_primary:  # as mongod: ObjectId("7fffffff" + term)
        fields["electionId"] = ObjectId("7fffffff%016x" % REPLSET["term"])
    return fields


def await_topology_change(cmd, node):
    """Awaitable hello: while node's topologyVersion is the one the client sent,
    wait (releasing LOCK) for a change, at most maxAwaitTimeMS."""
    known, max_wait = cmd.get("topologyVersion"), cmd.get("maxAwaitTimeMS")
    if not isinstance(known, dict) or max_wait is None:
        return
    if known.get("processId") != node.process_id or known.get("counter") != node.counter:
        return  # the client is behind: answer at once
    counter = node.counter
    TOPOLOGY_CHANGED.wait_for(lambda: node.counter != counter, timeout=max(0, max_wait) / 1000)


def set_primary(index):
    """Make member `index` primary (None: no primary).  Called with LOCK held."""
    REPLSET["primary"] = index
    if index is not None:
        REPLSET["term"] += 1
    for node in NODES:  # every member's hello changes: its role or the primary it names
        node.counter += 1
    TOPOLOGY_CHANGED.notify_all()
    print("replica set: primary is now %s (term %d)" % (index, REPLSET["term"]),
          file=sys.stderr, flush=True)


def step_down(new_primary, delay_ms=0):
    """The primary steps down; new_primary is elected after delay_ms.  LOCK held."""
    token = object()  # a later step-down cancels this election
    REPLSET["election"] = token
    if delay_ms <= 0:
        set_primary(new_primary)
        return
    set_primary(None)

    def elect():
        with LOCK:
            if REPLSET["election"] is token:
                set_primary(new_primary)

    timer = threading.Timer(delay_ms / 1000.0, elect)
    timer.daemon = True
    timer.start()


def refusal(name, cmd, node):
    """The error a member that is not primary answers name with, or None."""
    if REPLSET is None or REPLSET["primary"] == node.index:
        return None
    if name in WRITE_COMMANDS:
        reply = error_reply(10107, "not primary")
        if "txnNumber" in cmd and cmd.get("autocommit") is not False:
            reply["errorLabels"] = ["RetryableWriteError"]  # a retryable write
    elif name in READ_COMMANDS and (cmd.get("$readPreference") or {}).get("mode",
                                                                         "primary") == "primary":
        reply = error_reply(13435, "not primary and secondaryOk=false")
    else:
        return None
    reply["topologyVersion"] = topology_version(node)
    return reply


def number_arg(cmd, key, default=None):
    """cmd[key] (or default) as a number of milliseconds (within 30 years)."""
    value = cmd.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= 1e12:
        raise CommandError(2, "%s must be a number of milliseconds (at most 1e12 either way),"
                              " not %r" % (key, value))
    return value


def node_arg(cmd, key):
    value = cmd.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or value not in range(len(NODES)):
        raise CommandError(2, "%s must be a member index from 0 to %d, not %r"
                           % (key, len(NODES) - 1, value))
    return int(value)


def require_admin(db, name):
    if db.name != "admin":
        raise CommandError(13, "%s may only be run against the admin database." % name)


def require_replset(name):
    if REPLSET is None:
        raise CommandError(76, "%s: not running with --replset" % name)


def cmd_test_hello_offset(db, cmd, conn):
    require_admin(db, "failoverTestHelloOffset")
    app = cmd["failoverTestHelloOffset"]
    if not isinstance(app, str) or not app:
        raise CommandError(2, "failoverTestHelloOffset takes the appName (a non-empty string)"
                              " whose hello localTime to shift, not %r" % (app,))
    offset = number_arg(cmd, "offsetMs")
    if offset:
        HELLO_OFFSETS[app] = offset
    else:
        HELLO_OFFSETS.pop(app, None)
    return {"ok": 1.0}


def cmd_test_node_offset(db, cmd, conn):
    require_admin(db, "failoverTestNodeOffset")
    NODES[node_arg(cmd, "failoverTestNodeOffset")].offset_ms = number_arg(cmd, "offsetMs")
    return {"ok": 1.0}


def cmd_test_step_down(db, cmd, conn):
    require_admin(db, "failoverTestStepDown")
    require_replset("failoverTestStepDown")
    old = REPLSET["primary"]
    new = node_arg(cmd, "newPrimary") if "newPrimary" in cmd else \
        (0 if old is None else (old + 1) % len(NODES))
    step_down(new, number_arg(cmd, "electionDelayMs", 0))
    return {"ok": 1.0}


def cmd_repl_set_step_down(db, cmd, conn):
    require_admin(db, "replSetStepDown")
    require_replset("replSetStepDown")
    secs = cmd["replSetStepDown"]
    if isinstance(secs, bool) or not isinstance(secs, (int, float)):
        raise CommandError(2, "replSetStepDown takes the number of seconds to step down for,"
                              " not %r" % (secs,))
    node = conn["node"]
    if REPLSET["primary"] != node.index:
        raise CommandError(10107, "not primary so can't step down")
    step_down((node.index + 1) % len(NODES))
    return {"ok": 1.0}


def cmd_build_info(db, cmd, conn):
    return {"version": "6.0.0", "versionArray": [6, 0, 0, 0], "gitVersion": "mongomock",
            "bits": 64, "maxBsonObjectSize": MAX_BSON, "ok": 1.0}


def cmd_server_status(db, cmd, conn):
    return {
        "host": "127.0.0.1", "version": "6.0.0", "process": "mongod", "pid": Int64(os.getpid()),
        "uptime": float(int(time.time() - STARTED)),
        "uptimeMillis": Int64(int((time.time() - STARTED) * 1000)), "localTime": conn_now(conn),
        "opcounters": {k: Int64(v) for k, v in OPCOUNTERS.items()},
        "connections": {"current": CONNECTIONS["current"], "available": 1000,
                        "totalCreated": Int64(CONNECTIONS["totalCreated"])},
        "ok": 1.0,
    }


def cmd_ok(db, cmd, conn):
    return {"ok": 1.0}


def write_statements(cmd, key, counter, run_one):
    """Run the statements of an insert/update/delete command, like mongod.

    run_one(stmt) returns (n, nModified, upserted _id or None).  A failing
    statement becomes a writeErrors entry (e.g. code 11000) in an ok:1 reply,
    and stops the batch when it is ordered (the default)."""
    n = modified = 0
    upserted, errors = [], []
    for i, stmt in enumerate(cmd.get(key, [])):
        OPCOUNTERS[counter] += 1
        try:
            dn, dm, upserted_id = run_one(stmt)
            n, modified = n + dn, modified + dm
            if upserted_id is not None:
                upserted.append({"index": i, "_id": upserted_id})
        except Exception as exc:  # noqa: BLE001 - becomes a write error
            code, errmsg = exception_to_error(exc)
            errors.append({"index": i, "code": code, "errmsg": errmsg})
            if cmd.get("ordered", True):
                break
    reply = {"n": n, "ok": 1.0}
    if key == "updates":
        reply["nModified"] = modified
    if upserted:
        reply["upserted"] = upserted
    if errors:
        reply["writeErrors"] = errors
    return reply


def cmd_insert(db, cmd, conn):
    coll = db[cmd["insert"]]

    def run_one(doc):
        coll.insert_one(doc)
        return 1, 0, None

    return write_statements(cmd, "documents", "insert", run_one)


def cmd_update(db, cmd, conn):
    coll = db[cmd["update"]]

    def run_one(stmt):
        if stmt.get("arrayFilters") or stmt.get("collation"):
            raise NotImplementedError("arrayFilters/collation")
        update, multi = stmt.get("u", {}), bool(stmt.get("multi", False))
        if multi and not is_operator_update(update):
            raise CommandError(9, "multi update is not supported for replacement-style update")
        upsert = bool(stmt.get("upsert", False))
        query = upsert_query(stmt.get("q", {})) if upsert else stmt.get("q", {})
        res = coll._update(query, update, upsert=upsert,
                           multi=multi)
        return res["n"], res["nModified"], res["upserted"]

    return write_statements(cmd, "updates", "update", run_one)


def cmd_delete(db, cmd, conn):
    coll = db[cmd["delete"]]

    def run_one(stmt):
        q = stmt.get("q", {})
        res = coll.delete_one(q) if stmt.get("limit", 0) == 1 else coll.delete_many(q)
        return res.deleted_count, 0, None

    return write_statements(cmd, "deletes", "delete", run_one)


def cmd_find(db, cmd, conn):
    OPCOUNTERS["query"] += 1
    name = cmd["find"]
    cursor = db[name].find(cmd.get("filter") or {}, projection=cmd.get("projection") or None)
    sort = sort_spec(cmd.get("sort"))
    if sort:
        cursor = cursor.sort(sort)
    if cmd.get("skip"):
        cursor = cursor.skip(int(cmd["skip"]))
    if cmd.get("limit"):
        cursor = cursor.limit(abs(int(cmd["limit"])))
    return cursor_reply("%s.%s" % (db.name, name), cursor)


def cmd_get_more(db, cmd, conn):
    OPCOUNTERS["getmore"] += 1
    raise CommandError(43, "cursor id %s not found" % cmd["getMore"])


def cmd_kill_cursors(db, cmd, conn):
    return {"cursorsKilled": [], "cursorsNotFound": list(cmd.get("cursors", [])),
            "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0}


def cmd_find_and_modify(db, cmd, conn):
    coll = db[next(iter(cmd.values()))]
    query, sort, fields = cmd.get("query") or {}, sort_spec(cmd.get("sort")), cmd.get("fields")
    update, remove = cmd.get("update"), bool(cmd.get("remove", False))
    if remove == (update is not None):
        raise CommandError(9, "Either an update or remove=true must be specified, not both")
    if cmd.get("arrayFilters") or cmd.get("collation"):
        raise NotImplementedError("arrayFilters/collation")
    if remove and cmd.get("new"):
        raise CommandError(9, "Cannot specify both new=true and remove=true")
    OPCOUNTERS["delete" if remove else "update"] += 1
    before = coll.find_one(query, sort=sort)
    if remove:
        if before is not None:
            coll.delete_one({"_id": before["_id"]})
        return {"lastErrorObject": {"n": 1 if before else 0},
                "value": project(coll, before, fields), "ok": 1.0}
    if before is not None:
        # With a sort the matched document is not necessarily the first one.
        target = {"_id": before["_id"]} if sort else query
        coll._update(target, update)
        after = coll.find_one({"_id": before["_id"]})
        leo = {"n": 1, "updatedExisting": True}
    elif cmd.get("upsert"):
        res = coll._update(upsert_query(query), update, upsert=True)
        after = coll.find_one({"_id": res["upserted"]})
        leo = {"n": 1, "updatedExisting": False, "upserted": res["upserted"]}
    else:
        after, leo = None, {"n": 0, "updatedExisting": False}
    value = after if cmd.get("new") else before
    return {"lastErrorObject": leo, "value": project(coll, value, fields), "ok": 1.0}


def cmd_count(db, cmd, conn):
    kwargs = {}
    if cmd.get("skip"):
        kwargs["skip"] = int(cmd["skip"])
    if cmd.get("limit"):
        kwargs["limit"] = abs(int(cmd["limit"]))
    return {"n": db[cmd["count"]].count_documents(cmd.get("query") or {}, **kwargs), "ok": 1.0}


def cmd_aggregate(db, cmd, conn):
    name = cmd["aggregate"]
    if not isinstance(name, str):
        raise NotImplementedError("database-level aggregate")
    return cursor_reply("%s.%s" % (db.name, name), db[name].aggregate(cmd.get("pipeline", [])))


def cmd_distinct(db, cmd, conn):
    return {"values": db[cmd["distinct"]].distinct(cmd["key"], cmd.get("query")), "ok": 1.0}


def cmd_create(db, cmd, conn):
    db.create_collection(cmd["create"])
    return {"ok": 1.0}


def cmd_create_indexes(db, cmd, conn):
    name = cmd["createIndexes"]
    created = name not in db.list_collection_names()
    coll = db[name]
    before = len(coll.index_information())
    for spec in cmd.get("indexes", []):
        opts = {k: spec[k] for k in ("name", "unique", "sparse", "expireAfterSeconds",
                                     "partialFilterExpression") if k in spec}
        coll.create_index(list(spec["key"].items()), **opts)
    return {"createdCollectionAutomatically": created, "numIndexesBefore": before,
            "numIndexesAfter": len(coll.index_information()), "ok": 1.0}


def cmd_list_indexes(db, cmd, conn):
    name = cmd["listIndexes"]
    if name not in db.list_collection_names():
        raise CommandError(26, "ns does not exist: %s.%s" % (db.name, name))
    docs = []
    for idx_name, info in db[name].index_information().items():
        doc = {"v": info.get("v", 2), "key": dict(info["key"]), "name": idx_name}
        doc.update({k: v for k, v in info.items() if k not in ("v", "key")})
        docs.append(doc)
    return cursor_reply("%s.%s" % (db.name, name), docs)


def cmd_drop_indexes(db, cmd, conn):
    coll, index = db[cmd["dropIndexes"]], cmd.get("index", "*")
    if index == "*":
        coll.drop_indexes()
    else:
        coll.drop_index(list(index.items()) if isinstance(index, dict) else index)
    return {"ok": 1.0}


def cmd_drop(db, cmd, conn):
    db.drop_collection(cmd["drop"])
    return {"ns": "%s.%s" % (db.name, cmd["drop"]), "ok": 1.0}


def cmd_drop_database(db, cmd, conn):
    CLIENT.drop_database(db.name)
    return {"dropped": db.name, "ok": 1.0}


def cmd_list_collections(db, cmd, conn):
    docs = [{"name": n, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for n in sorted(db.list_collection_names())]
    flt = cmd.get("filter") or {}
    return cursor_reply("%s.$cmd.listCollections" % db.name,
                        [d for d in docs if filtering.filter_applies(flt, d)])


def cmd_list_databases(db, cmd, conn):
    docs = [{"name": n, "sizeOnDisk": Int64(0), "empty": False}
            for n in sorted(CLIENT.list_database_names())]
    docs = [d for d in docs if filtering.filter_applies(cmd.get("filter") or {}, d)]
    if cmd.get("nameOnly"):
        return {"databases": [{"name": d["name"]} for d in docs], "ok": 1.0}
    return {"databases": docs, "totalSize": Int64(0), "ok": 1.0}


def cmd_configure_fail_point(db, cmd, conn):
    global FAILPOINT
    if db.name != "admin":
        raise CommandError(13, "configureFailPoint may only be run against the admin database.")
    if cmd["configureFailPoint"] != "failCommand":
        return {"count": Int64(0), "ok": 1.0}  # other fail points: accepted, no effect
    mode, data = cmd.get("mode"), cmd.get("data") or {}
    if mode == "off":
        FAILPOINT = None
    elif mode == "alwaysOn" or (isinstance(mode, dict) and len(mode) == 1 and next(iter(mode))
                                in ("times", "skip", "activationProbability")):
        if not isinstance(data.get("failCommands"), list):
            raise CommandError(9, "failCommand fail point requires data.failCommands")
        FAILPOINT = {"mode": mode, "data": data,
                     "left": int(next(iter(mode.values()))) if isinstance(mode, dict) else 0}
    else:
        raise CommandError(9, "invalid fail point mode: %r" % (mode,))
    return {"count": Int64(0), "ok": 1.0}


COMMANDS = {
    "hello": cmd_hello, "isMaster": cmd_hello, "ping": cmd_ok, "buildInfo": cmd_build_info,
    "serverStatus": cmd_server_status, "endSessions": cmd_ok, "insert": cmd_insert,
    "update": cmd_update, "delete": cmd_delete, "find": cmd_find, "getMore": cmd_get_more,
    "killCursors": cmd_kill_cursors, "findAndModify": cmd_find_and_modify, "count": cmd_count,
    "aggregate": cmd_aggregate, "distinct": cmd_distinct, "create": cmd_create,
    "createIndexes": cmd_create_indexes, "listIndexes": cmd_list_indexes,
    "dropIndexes": cmd_drop_indexes, "drop": cmd_drop, "dropDatabase": cmd_drop_database,
    "listCollections": cmd_list_collections, "listDatabases": cmd_list_databases,
    "configureFailPoint": cmd_configure_fail_point, "replSetStepDown": cmd_repl_set_step_down,
    "failoverTestHelloOffset": cmd_test_hello_offset,
    "failoverTestNodeOffset": cmd_test_node_offset, "failoverTestStepDown": cmd_test_step_down,
}
CANONICAL = {name.lower(): name for name in COMMANDS}  # findandmodify -> findAndModify
COUNTED_ELSEWHERE = {"insert", "update", "delete", "find", "getMore", "findAndModify"}


# --- fail point and dispatch ---------------------------------------------------
def take_fail_point(name, conn):
    """Data of the failCommand fail point if it fires for this command, else None.

    Must be called with LOCK held; consumes one activation of {times: n}."""
    global FAILPOINT
    fp = FAILPOINT
    if fp is None or name in NEVER_FAILED or name not in fp["data"]["failCommands"]:
        return None
    app = fp["data"].get("appName")
    if app is not None and app != conn.get("app_name"):
        return None
    mode = fp["mode"]
    if isinstance(mode, dict):
        if "activationProbability" in mode and random.random() >= float(mode["activationProbability"]):
            return None
        if "skip" in mode and fp["left"] > 0:
            fp["left"] -= 1
            return None
        if "times" in mode:
            if fp["left"] <= 0:
                FAILPOINT = None
                return None
            fp["left"] -= 1
            if fp["left"] <= 0:
                FAILPOINT = None
    return fp["data"]


def handle(request, conn):
    """Run one request; reply, or hang up.  Returns False to close the connection."""
    global CLOCK_NODE
    cmd = request.doc
    raw_name = request.command_name
    name = CANONICAL.get(raw_name.lower(), raw_name)
    with LOCK:
        fp = take_fail_point(name, conn)
    if fp and fp.get("blockConnection"):
        time.sleep(int(fp.get("blockTimeMS", 0)) / 1000.0)  # outside LOCK: others go on
    if fp and fp.get("closeConnection"):
        log("%d: %s -> failpoint closeConnection" % (conn["id"], name))
        request.hangup()
        return False
    if fp and fp.get("errorCode") is not None:
        reply = error_reply(int(fp["errorCode"]), "Failing command via 'failCommand' failpoint")
        if "errorLabels" in fp:
            reply["errorLabels"] = fp["errorLabels"]
    else:
        with LOCK:
            CLOCK_NODE = conn["node"]
            handler = COMMANDS.get(name)
            if name not in COUNTED_ELSEWHERE:
                OPCOUNTERS["command"] += 1
            refused = refusal(name, cmd, conn["node"])
            if handler is None:
                reply = error_reply(59, "no such command: '%s'" % raw_name)
            elif refused:
                reply = refused
            else:
                db = CLIENT[cmd.get("$db", "test")]
                try:
                    reply = handler(db, cmd, conn)
                except Exception as exc:  # noqa: BLE001 - reported to the client
                    if VERBOSE and not isinstance(exc, CommandError):
                        traceback.print_exc()
                    reply = error_reply(*exception_to_error(exc))
        if fp and "writeConcernError" in fp and reply.get("ok"):
            reply["writeConcernError"] = fp["writeConcernError"]
    log("%d: %s %r -> %r" % (conn["id"], name, dict(cmd), reply))
    if request.flags and request.flags & mockupdb.OP_MSG_FLAGS["moreToCome"]:
        return True  # unacknowledged write: no reply
    request.replies(reply)
    return True


class Server(mockupdb.MockupDB):
    """mockupdb's accept loop, with our own per-connection loop.

    mockupdb's loop holds its server-wide lock while handling a request and
    has no per-connection state; ours remembers the connection id, the
    appName from the handshake and the member (Node) this server plays, and
    lets blockConnection and awaitable hellos wait without the lock.
    """

    _ids = itertools.count(1)

    node = None  # the member this server plays

    def _server_loop(self, client, client_addr):
        conn = {"id": next(self._ids), "app_name": None, "node": self.node}
        with LOCK:
            CONNECTIONS["current"] += 1
            CONNECTIONS["totalCreated"] += 1
        try:
            while not self._stopped:
                request = mockupdb.mock_server_receive_request(client, self)
                if not handle(request, conn):
                    break
        except OSError:
            pass  # the client hung up
        except Exception:  # noqa: BLE001 - malformed request: drop the connection
            traceback.print_exc()
        finally:
            with LOCK:
                CONNECTIONS["current"] -= 1
            client.close()


def offset_option(parser, option, value, key_type):
    """KEY=MS of a repeatable offset option -> (key, ms); a bad one exits with usage."""
    key, sep, ms = value.rpartition("=")
    try:
        if not sep or not key:
            raise ValueError(value)
        return key_type(key), int(ms)
    except ValueError:
        parser.error("%s takes %s=MS (an integer number of milliseconds), not %r"
                     % (option, "I" if key_type is int else "APPNAME", value))


def main():
    global VERBOSE, REPLSET
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0,
                        help="first port (members get consecutive ones); 0: any free ports")
    parser.add_argument("--replset", type=int, default=0, metavar="N",
                        help="play a replica set of N members (default: a standalone)")
    parser.add_argument("--set-name", default="rs0", help="the replica set's name")
    parser.add_argument("--node-offset", action="append", default=[], metavar="I=MS",
                        help="member I's clock runs MS ms ahead (negative: behind)")
    parser.add_argument("--hello-offset", action="append", default=[], metavar="APPNAME=MS",
                        help="hello localTime on APPNAME's connections is MS ms ahead")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    VERBOSE = args.verbose
    if args.replset < 0:
        parser.error("--replset takes the number of members (1 or more)")
    NODES.extend(Node(i) for i in range(max(1, args.replset)))
    for value in args.node_offset:
        index, ms = offset_option(parser, "--node-offset", value, int)
        if not 0 <= index < len(NODES):
            parser.error("--node-offset %s: no member %d (members: 0 to %d)"
                         % (value, index, len(NODES) - 1))
        NODES[index].offset_ms = ms
    for value in args.hello_offset:
        app, ms = offset_option(parser, "--hello-offset", value, str)
        HELLO_OFFSETS[app] = ms
    if args.replset:
        REPLSET = {"name": args.set_name, "primary": 0, "term": 1, "election": None}

    for node in NODES:
        port = args.port + node.index if args.port else 0
        server = Server(port=port, verbose=False, request_timeout=int(1e6))
        server.node = node
        server._address = ("127.0.0.1", port)
        node.host = "127.0.0.1:%d" % server.run()
    print("PORT " + " ".join(n.host.rpartition(":")[2] for n in NODES), flush=True)

    # os._exit: skip mockupdb's atexit hook, which joins every thread.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except OSError:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
