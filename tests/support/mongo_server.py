#!/usr/bin/env python3
"""A small MongoDB wire-compatible server for the integration tests.

mockupdb (MongoDB's wire-protocol test library) parses OP_MSG requests and
encodes replies; every command is then executed against ONE in-process
mongomock client while holding ONE global lock, so each command is atomic
(as a single-document write is in MongoDB).  The server presents itself as a
standalone mongod 6.0 (maxWireVersion 17) without sessions: no
logicalSessionTimeoutMinutes, so the driver sends no lsid and does not retry
writes (retryable reads still apply, as against a real standalone).

Usage: python mongo_server.py [--port N] [--verbose]

Binds 127.0.0.1 (port 0 = any free port), prints exactly one line `PORT <n>`
on stdout once it accepts connections, and serves until stdin reaches EOF or
SIGTERM/SIGINT arrives.  --verbose logs every command to stderr.

Test-mode fail point (`configureFailPoint` on the admin db, as mongod with
enableTestCommands=1): only `failCommand` is implemented, with modes "off",
"alwaysOn", {times: n}, {skip: n}, {activationProbability: p} and data fields
failCommands, appName, blockConnection/blockTimeMS, closeConnection,
errorCode, errorLabels and writeConcernError.  Other fail point names are
accepted as no-ops (ok: 1).  hello/isMaster and configureFailPoint are never
failed.

Not supported: sessions/transactions, getMore on real cursors (every reply
holds the whole result with cursor id 0, so results must fit in 16 MB), TTL
expiry, collation, arrayFilters, `$$NOW` in pipeline updates (mongomock
ignores it).
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
from mongomock import collection as mm_collection  # noqa: E402
from mongomock import filtering  # noqa: E402

LOCK = threading.Lock()  # one global lock: every command (and fail point state)
CLIENT = mongomock.MongoClient()
STARTED = time.time()
VERBOSE = False
MAX_BSON = 16 * 1024 * 1024

OPCOUNTERS = dict.fromkeys(("insert", "query", "update", "delete", "getmore", "command"), 0)
CONNECTIONS = {"current": 0, "totalCreated": 0}
FAILPOINT = None  # active failCommand: {"mode": ..., "data": ..., "left": n}
NEVER_FAILED = {"hello", "isMaster", "configureFailPoint"}

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
    13436: "NotPrimaryOrSecondary",
}


class CommandError(Exception):
    """Raised by a command handler to produce an {ok: 0, code, errmsg} reply."""

    def __init__(self, code, errmsg):
        super().__init__(errmsg)
        self.code = code


def log(msg):
    if VERBOSE:
        print(msg, file=sys.stderr, flush=True)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


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
    return {
        "helloOk": True, "ismaster": True, "isWritablePrimary": True,
        "maxBsonObjectSize": MAX_BSON, "maxMessageSizeBytes": 48000000,
        "maxWriteBatchSize": 100000, "localTime": now(), "connectionId": conn["id"],
        "minWireVersion": 0, "maxWireVersion": 17, "readOnly": False, "ok": 1.0,
    }


def cmd_build_info(db, cmd, conn):
    return {"version": "6.0.0", "versionArray": [6, 0, 0, 0], "gitVersion": "mongomock",
            "bits": 64, "maxBsonObjectSize": MAX_BSON, "ok": 1.0}


def cmd_server_status(db, cmd, conn):
    return {
        "host": "127.0.0.1", "version": "6.0.0", "process": "mongod", "pid": Int64(os.getpid()),
        "uptime": float(int(time.time() - STARTED)),
        "uptimeMillis": Int64(int((time.time() - STARTED) * 1000)), "localTime": now(),
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
    "configureFailPoint": cmd_configure_fail_point,
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
            handler = COMMANDS.get(name)
            if name not in COUNTED_ELSEWHERE:
                OPCOUNTERS["command"] += 1
            if handler is None:
                reply = error_reply(59, "no such command: '%s'" % raw_name)
            else:
                db = CLIENT[cmd.get("$db", "test")]
                try:
                    reply = handler(db, cmd, conn)
                except Exception as exc:  # noqa: BLE001 - reported to the client
                    if VERBOSE:
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
    has no per-connection state; ours remembers the connection id and the
    appName from the handshake, and lets blockConnection sleep without a lock.
    """

    _ids = itertools.count(1)

    def _server_loop(self, client, client_addr):
        conn = {"id": next(self._ids), "app_name": None}
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


def main():
    global VERBOSE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    VERBOSE = args.verbose

    server = Server(port=args.port, verbose=False, request_timeout=int(1e6))
    server._address = ("127.0.0.1", args.port)
    port = server.run()
    print("PORT %d" % port, flush=True)

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
