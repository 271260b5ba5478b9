------------------------------ MODULE TraceReplay ------------------------------
(***************************************************************************)
(* Replay of a recorded write/delete trace of Amberio (contract section   *)
(* 13, integration case 008).                                             *)
(*                                                                         *)
(* Trace is a sequence of records, one per answered request, in the order *)
(* the answers arrived:                                                    *)
(*   kind      "put" | "put_retry" | "delete"                             *)
(*   path, wid, etag   strings (etag "" for deletes)                      *)
(*   gen       the generation answered (0 when the request failed)       *)
(*   committed committed_replicas, or -1 when the answer has none         *)
(*   ok        quorum_reached (a 2xx answer)                              *)
(*   cached    from_cache (idempotent_replay)                             *)
(*   started, finished  when the request was sent / answered (integers)  *)
(*                                                                         *)
(* Each step consumes one event, and is enabled only when the event obeys *)
(* the rules below; a trace that breaks one leaves Next disabled before   *)
(* its end, which TLC reports as a deadlock. scripts/tla/check_trace.py   *)
(* generates a module that EXTENDS this one with the recorded trace; the  *)
(* same rules are replayed in Python by that script.                      *)
(*                                                                         *)
(*  - quorum: an acknowledged write has a generation >= 1 and, when the   *)
(*    answer says, committed_replicas >= W;                                *)
(*  - retries: a retry of an acknowledged write is a replay, never a      *)
(*    second write (a write id is written once); a first put is not a     *)
(*    replay; a replay answers the generation (and etag) of the first     *)
(*    acknowledged write with its write id, same path and kind;           *)
(*  - generations strictly increase per path in real time: a write sent   *)
(*    after another write of the path was answered gets a higher one;     *)
(*  - the head of a path is the section 6 winner of its fresh writes:     *)
(*    higher generation, then tombstone over meta (deletes win over       *)
(*    same-generation metas); two metas of one generation are told apart  *)
(*    by head sha256, which the trace does not carry, so both etags stay  *)
(*    possible.                                                            *)
(***************************************************************************)
EXTENDS Naturals, Integers, Sequences, FiniteSets

CONSTANTS Trace, W

ASSUME W \in Nat \ {0}

Idx == 1 .. Len(Trace)
Ev(k) == Trace[k]
Paths == {Trace[k].path : k \in Idx}
WriteIds == {Trace[k].wid : k \in Idx}

IsDelete(k) == Ev(k).kind = "delete"
HeadKind(k) == IF IsDelete(k) THEN "tombstone" ELSE "meta"
Fresh(k) == Ev(k).ok /\ ~Ev(k).cached
Precedes(a, b) == Ev(a).finished < Ev(b).started

Rank(kind) == CASE kind = "tombstone" -> 2
              []   kind = "meta"      -> 1
              []   OTHER              -> 0

NoHead == [gen |-> 0, kind |-> "none", etags |-> {}]
NoRecord == [gen |-> 0, kind |-> "none", etag |-> "", path |-> ""]

NewHead(k) == [gen   |-> Ev(k).gen,
               kind  |-> HeadKind(k),
               etags |-> IF IsDelete(k) THEN {} ELSE {Ev(k).etag}]

Beats(h1, h2) == \/ h1.gen > h2.gen
                 \/ /\ h1.gen = h2.gen
                    /\ Rank(h1.kind) > Rank(h2.kind)

Merge(h, n) == IF Beats(n, h) THEN n
               ELSE IF Beats(h, n) THEN h
               ELSE [h EXCEPT !.etags = h.etags \cup n.etags]

VARIABLES
    i,       \* the next event to replay
    heads,   \* path -> the winning head of the fresh writes replayed so far
    origin,  \* write id -> the first acknowledged fresh write that used it
    done     \* the events replayed so far

vars == <<i, heads, origin, done>>

Init == /\ i = 1
        /\ heads = [p \in Paths |-> NoHead]
        /\ origin = [w \in WriteIds |-> NoRecord]
        /\ done = {}

QuorumOK(k) ==
    Ev(k).ok => /\ Ev(k).gen >= 1
                /\ Ev(k).committed = -1 \/ Ev(k).committed >= W

RetryOK(k) ==
    /\ Ev(k).kind = "put" => ~Ev(k).cached
    /\ (Ev(k).ok /\ Ev(k).cached) =>
           LET o == origin[Ev(k).wid]
           IN  /\ o # NoRecord
               /\ o.path = Ev(k).path
               /\ o.kind = HeadKind(k)
               /\ o.gen = Ev(k).gen
               /\ ~IsDelete(k) => o.etag = Ev(k).etag
    /\ Fresh(k) => origin[Ev(k).wid] = NoRecord

MonotoneOK(k) ==
    Fresh(k) => \A a \in done :
                    (Fresh(a) /\ Ev(a).path = Ev(k).path /\ Precedes(a, k))
                        => Ev(a).gen < Ev(k).gen

StepOK(k) == QuorumOK(k) /\ RetryOK(k) /\ MonotoneOK(k)

Step ==
    /\ i \in Idx
    /\ StepOK(i)
    /\ heads' = IF Fresh(i)
                THEN [heads EXCEPT ![Ev(i).path] = Merge(@, NewHead(i))]
                ELSE heads
    /\ origin' = IF Fresh(i)
                 THEN [origin EXCEPT ![Ev(i).wid] =
                          [gen |-> Ev(i).gen, kind |-> HeadKind(i),
                           etag |-> Ev(i).etag, path |-> Ev(i).path]]
                 ELSE origin
    /\ done' = done \cup {i}
    /\ i' = i + 1

\* Every event replayed: stutter, so that only a rejected event deadlocks.
Finished == /\ i = Len(Trace) + 1
            /\ UNCHANGED vars

Next == Step \/ Finished

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ i \in 1 .. Len(Trace) + 1
    /\ done = 1 .. (i - 1)
    /\ DOMAIN heads = Paths
    /\ DOMAIN origin = WriteIds

\* The head of every path beats or equals every fresh write of it replayed so far.
HeadIsWinner ==
    \A k \in done : Fresh(k) => ~Beats(NewHead(k), heads[Ev(k).path])

\* Deletes win over same-generation metas.
DeletesWin ==
    \A a, b \in done :
        (/\ Fresh(a) /\ Fresh(b)
         /\ Ev(a).path = Ev(b).path
         /\ IsDelete(a) /\ ~IsDelete(b)
         /\ Ev(a).gen = Ev(b).gen)
            => heads[Ev(a).path].kind = "tombstone"
               \/ heads[Ev(a).path].gen > Ev(a).gen

\* Every replayed retry answered what its write id's first write answered.
RetriesReplay ==
    \A k \in done :
        (Ev(k).ok /\ Ev(k).cached) => origin[Ev(k).wid].gen = Ev(k).gen

-----------------------------------------------------------------------------
(* A small trace for tla/TraceReplay.cfg: three writes of one path through *)
(* different nodes, a retry of the first, a delete and its retry, and a    *)
(* put and a delete of another path that overlapped and both got           *)
(* generation 1 (the tombstone wins).                                      *)

SampleTrace ==
    << [kind |-> "put", path |-> "a", wid |-> "w1", etag |-> "e1", gen |-> 1,
        committed |-> 3, ok |-> TRUE, cached |-> FALSE, started |-> 0, finished |-> 1],
       [kind |-> "put_retry", path |-> "a", wid |-> "w1", etag |-> "e1", gen |-> 1,
        committed |-> 3, ok |-> TRUE, cached |-> TRUE, started |-> 2, finished |-> 3],
       [kind |-> "put", path |-> "a", wid |-> "w2", etag |-> "e2", gen |-> 2,
        committed |-> 2, ok |-> TRUE, cached |-> FALSE, started |-> 4, finished |-> 5],
       [kind |-> "delete", path |-> "a", wid |-> "w3", etag |-> "", gen |-> 3,
        committed |-> -1, ok |-> TRUE, cached |-> FALSE, started |-> 6, finished |-> 7],
       [kind |-> "delete", path |-> "a", wid |-> "w3", etag |-> "", gen |-> 3,
        committed |-> -1, ok |-> TRUE, cached |-> TRUE, started |-> 8, finished |-> 9],
       [kind |-> "put_retry", path |-> "a", wid |-> "w1", etag |-> "e1", gen |-> 1,
        committed |-> 3, ok |-> TRUE, cached |-> TRUE, started |-> 10, finished |-> 11],
       [kind |-> "put", path |-> "b", wid |-> "w4", etag |-> "e4", gen |-> 1,
        committed |-> 2, ok |-> TRUE, cached |-> FALSE, started |-> 12, finished |-> 15],
       [kind |-> "delete", path |-> "b", wid |-> "w5", etag |-> "", gen |-> 1,
        committed |-> -1, ok |-> TRUE, cached |-> FALSE, started |-> 13, finished |-> 16] >>

SampleW == 2

=============================================================================
