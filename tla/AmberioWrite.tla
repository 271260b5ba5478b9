------------------------------ MODULE AmberioWrite ------------------------------
(***************************************************************************)
(* Write semantics of Amberio for one path of one slot (contract section  *)
(* 6): generations from a read quorum, quorum commit, abort below W,      *)
(* write-id replay, the tombstone rule, anti-entropy, crashes.            *)
(*                                                                         *)
(* The slot has the replicas Nodes (R of them). A request of a client is   *)
(* coordinated as section 6 says:                                          *)
(*  - fewer than W replicas alive: refused at once (503), nothing written; *)
(*  - otherwise the heads and write-id records of a read quorum (R - W + 1 *)
(*    live replicas) are read;                                            *)
(*  - a record of the request's write id with another body: 409;          *)
(*  - a record with the same body: a replay (200 with the original        *)
(*    generation), see below;                                              *)
(*  - no record: a fresh head at next_generation = 1 + the highest         *)
(*    generation read, applied replica by replica; acknowledged (201) once *)
(*    W replicas applied it; when acks fall short the coordinator gives up *)
(*    (503) and aborts: the head is removed from the replicas that applied *)
(*    it, only where it is still their head. A coordinator may also crash  *)
(*    mid-write: no answer, no abort (the write is indeterminate).         *)
(* A DELETE is the same with a tombstone (Body 0).                         *)
(*                                                                         *)
(* Heads: a replica keeps every head applied to it (an abort restores the  *)
(* previous one); the visible head is the section 6 winner: higher         *)
(* generation, then tombstone over meta, then the greater head sha256      *)
(* (Sha below: distinct heads have distinct values). Anti-entropy copies a *)
(* replica's visible head to another replica where it wins. Crashes keep   *)
(* what was applied (a 201 means the head survives power loss).            *)
(*                                                                         *)
(* Replays. The write-id record travels with the head. A record does not   *)
(* say whether its write reached W replicas, so a coordinator that finds   *)
(* one of a write that failed (and was superseded where it was applied, so *)
(* the abort left it there) would acknowledge a write that W replicas do   *)
(* not hold. With ReplayRedrivesUnconfirmed = TRUE the coordinator that    *)
(* acknowledges a write marks its record "confirmed" on the replicas that  *)
(* applied it; a replay answers at once from a confirmed record, and       *)
(* otherwise re-applies the found head until W replicas hold it before     *)
(* answering 200 (so a retry after a coordinator crash completes). With    *)
(* FALSE, any record found is replayed at once (the simplest reading of    *)
(* section 6); AckedReadable is then expected to fail with: A applied on   *)
(* one replica, B supersedes it there, A fails (its abort leaves it, it is *)
(* not the head), B fails and is aborted (A is the head again), a retry of *)
(* A finds the record and answers 200, and a read quorum without that      *)
(* replica misses A. Built as python/amberio/cluster/replay.py (replicas   *)
(* holding the record are counted instead of confirmed marks; a record on  *)
(* fewer than W is re-driven only while it is the winner, else 503): see   *)
(* tla/README.md.                                                          *)
(*                                                                         *)
(* Assumption: a client sends a retry only after its previous attempt with *)
(* that write id ended (answered, failed, or its coordinator crashed);     *)
(* concurrent duplicates of one write id are not modelled.                *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS
    Nodes,                      \* the replicas of the slot
    W,                          \* min_write_replicas
    Clients,                    \* client numbers, e.g. 1..2 (each one request at a time)
    Bodies,                     \* PUT bodies as numbers >= 1 (0 is a DELETE)
    WriteIds,                   \* write ids as numbers >= 1
    MaxSeq,                     \* requests per client
    MaxCrashes,                 \* node crashes in a behaviour
    ReplayRedrivesUnconfirmed   \* BOOLEAN, see above

ASSUME /\ W \in 1 .. Cardinality(Nodes)
       /\ Clients \subseteq (Nat \ {0})
       /\ Bodies \subseteq (Nat \ {0})
       /\ WriteIds \subseteq (Nat \ {0})
       /\ MaxSeq \in Nat
       /\ MaxCrashes \in Nat
       /\ ReplayRedrivesUnconfirmed \in BOOLEAN

R == Cardinality(Nodes)
RRead == R - W + 1
Delete == 0

Heads == [gen : Nat, body : Bodies \cup {Delete}, wid : WriteIds \cup {0},
          client : Clients \cup {0}, seq : 0 .. MaxSeq]
NoHead == [gen |-> 0, body |-> Delete, wid |-> 0, client |-> 0, seq |-> 0]

Rank(h) == IF h.body = Delete THEN 1 ELSE 0
\* Stands for the head's sha256: distinct heads get distinct numbers.
Sha(h) == ((h.body * 100 + h.wid) * 100 + h.client) * 100 + h.seq

Beats(h1, h2) ==
    \/ h1.gen > h2.gen
    \/ /\ h1.gen = h2.gen
       /\ \/ Rank(h1) > Rank(h2)
          \/ Rank(h1) = Rank(h2) /\ Sha(h1) > Sha(h2)

MaxOf(S) == IF S = {} THEN NoHead
            ELSE CHOOSE h \in S : \A o \in S : h = o \/ Beats(h, o)

Requests == [wid : WriteIds, body : Bodies \cup {Delete}, seq : 0 .. MaxSeq]
Answers == [client : Clients, seq : 0 .. MaxSeq, wid : WriteIds,
            status : {200, 201, 409, 503}, gen : Nat]

VARIABLES
    store,      \* node -> heads applied there and not aborted (durable)
    confirmed,  \* node -> heads whose write-id record is marked confirmed there
    alive,      \* the replicas that are up
    crashes,    \* node crashes so far
    pc,         \* client -> "idle" | "writing" | "redriving"
    seq,        \* client -> requests sent so far
    req,        \* client -> its current request
    cur,        \* client -> the head it is writing (or re-driving)
    acks,       \* client -> replicas holding cur through this request
    floor,      \* client -> the highest acknowledged generation when its request began
    acked,      \* heads acknowledged to a client (201, or 200 of a replay)
    answers     \* every answer given

vars == <<store, confirmed, alive, crashes, pc, seq, req, cur, acks, floor, acked, answers>>

Visible(n) == MaxOf(store[n])
ReadMax(Q) == MaxOf({Visible(n) : n \in Q})
AckedMax == IF acked = {} THEN 0 ELSE (MaxOf(acked)).gen
Holders(h) == {n \in Nodes : h \in store[n]}

Init ==
    /\ store = [n \in Nodes |-> {}]
    /\ confirmed = [n \in Nodes |-> {}]
    /\ alive = Nodes
    /\ crashes = 0
    /\ pc = [c \in Clients |-> "idle"]
    /\ seq = [c \in Clients |-> 0]
    /\ req = [c \in Clients |-> [wid |-> CHOOSE w \in WriteIds : TRUE, body |-> Delete, seq |-> 0]]
    /\ cur = [c \in Clients |-> NoHead]
    /\ acks = [c \in Clients |-> {}]
    /\ floor = [c \in Clients |-> 0]
    /\ acked = {}
    /\ answers = {}

Answer(c, status, gen) ==
    answers' = answers \cup {[client |-> c, seq |-> seq'[c], wid |-> req'[c].wid,
                              status |-> status, gen |-> gen]}

\* A client sends a request (a first attempt or a retry of a write id).
Begin(c, wid, body) ==
    /\ pc[c] = "idle"
    /\ seq[c] < MaxSeq
    /\ \A d \in Clients : pc[d] # "idle" => req[d].wid # wid   \* see "Assumption"
    /\ seq' = [seq EXCEPT ![c] = @ + 1]
    /\ req' = [req EXCEPT ![c] = [wid |-> wid, body |-> body, seq |-> seq[c] + 1]]
    /\ UNCHANGED <<store, confirmed, alive, crashes>>
    /\ IF Cardinality(alive) < W
       THEN \* refused at once, before writing anything
            /\ Answer(c, 503, 0)
            /\ UNCHANGED <<pc, cur, acks, floor, acked>>
       ELSE \E Q \in SUBSET alive :
            /\ Cardinality(Q) >= RRead
            /\ LET found == {h \in UNION {store[n] : n \in Q} : h.wid = wid}
                   sure  == {h \in found : \E n \in Q : h \in confirmed[n]}
               IN  IF \E h \in found : h.body # body
                   THEN \* the write id was used for another body (or a delete)
                        /\ Answer(c, 409, 0)
                        /\ UNCHANGED <<pc, cur, acks, floor, acked>>
                   ELSE IF found # {} /\ (sure # {} \/ ~ReplayRedrivesUnconfirmed)
                   THEN \* a replay answered at once
                        \E h \in (IF sure # {} THEN sure ELSE found) :
                            /\ Answer(c, 200, h.gen)
                            /\ acked' = acked \cup {h}
                            /\ UNCHANGED <<pc, cur, acks, floor>>
                   ELSE IF found # {}
                   THEN \* a replay of an unconfirmed record: re-apply it to W replicas first
                        \E h \in found :
                            /\ pc' = [pc EXCEPT ![c] = "redriving"]
                            /\ cur' = [cur EXCEPT ![c] = h]
                            /\ acks' = [acks EXCEPT ![c] = Holders(h) \cap alive]
                            /\ UNCHANGED <<floor, acked, answers>>
                   ELSE \* a fresh write at next_generation
                        /\ pc' = [pc EXCEPT ![c] = "writing"]
                        /\ cur' = [cur EXCEPT ![c] =
                                     [gen |-> ReadMax(Q).gen + 1, body |-> body,
                                      wid |-> wid, client |-> c, seq |-> seq[c] + 1]]
                        /\ acks' = [acks EXCEPT ![c] = {}]
                        /\ floor' = [floor EXCEPT ![c] = AckedMax]
                        /\ UNCHANGED <<acked, answers>>

\* A live replica applies the head a coordinator sends it.
Apply(c, n) ==
    /\ pc[c] \in {"writing", "redriving"}
    /\ n \in alive
    /\ n \notin acks[c]
    /\ store' = [store EXCEPT ![n] = @ \cup {cur[c]}]
    /\ acks' = [acks EXCEPT ![c] = @ \cup {n}]
    /\ UNCHANGED <<confirmed, alive, crashes, pc, seq, req, cur, floor, acked, answers>>

\* W replicas hold it: acknowledge, and mark the record confirmed where it was applied.
Commit(c) ==
    /\ pc[c] \in {"writing", "redriving"}
    /\ Cardinality(acks[c]) >= W
    /\ confirmed' = [n \in Nodes |-> IF n \in acks[c] THEN confirmed[n] \cup {cur[c]}
                                     ELSE confirmed[n]]
    /\ acked' = acked \cup {cur[c]}
    /\ answers' = answers \cup {[client |-> c, seq |-> seq[c], wid |-> req[c].wid,
                                 status |-> IF pc[c] = "writing" THEN 201 ELSE 200,
                                 gen |-> cur[c].gen]}
    /\ pc' = [pc EXCEPT ![c] = "idle"]
    /\ UNCHANGED <<store, alive, crashes, seq, req, cur, acks, floor>>

\* Acks fell short (timeouts, crashes): 503, and a fresh write is aborted on the live
\* replicas that applied it, only where it is still their head. A re-drive aborts nothing:
\* the head is not its own.
GiveUp(c) ==
    /\ pc[c] \in {"writing", "redriving"}
    /\ Cardinality(acks[c]) < W
    /\ store' = IF pc[c] = "writing"
                THEN [n \in Nodes |-> IF n \in acks[c] /\ n \in alive /\ Visible(n) = cur[c]
                                      THEN store[n] \ {cur[c]}
                                      ELSE store[n]]
                ELSE store
    /\ answers' = answers \cup {[client |-> c, seq |-> seq[c], wid |-> req[c].wid,
                                 status |-> 503, gen |-> 0]}
    /\ pc' = [pc EXCEPT ![c] = "idle"]
    /\ UNCHANGED <<confirmed, alive, crashes, seq, req, cur, acks, floor, acked>>

\* The coordinator dies mid-write: no answer, no abort.
CoordinatorCrash(c) ==
    /\ pc[c] \in {"writing", "redriving"}
    /\ pc' = [pc EXCEPT ![c] = "idle"]
    /\ UNCHANGED <<store, confirmed, alive, crashes, seq, req, cur, acks, floor, acked, answers>>

Crash(n) ==
    /\ n \in alive
    /\ crashes < MaxCrashes
    /\ alive' = alive \ {n}
    /\ crashes' = crashes + 1
    /\ UNCHANGED <<store, confirmed, pc, seq, req, cur, acks, floor, acked, answers>>

Recover(n) ==
    /\ n \notin alive
    /\ alive' = alive \cup {n}
    /\ UNCHANGED <<store, confirmed, crashes, pc, seq, req, cur, acks, floor, acked, answers>>

\* Anti-entropy: n pulls m's head where it wins (section 9).
AntiEntropy(n, m) ==
    /\ n \in alive /\ m \in alive /\ n # m
    /\ store[m] # {}
    /\ Visible(m) \notin store[n]
    /\ Beats(Visible(m), Visible(n))
    /\ store' = [store EXCEPT ![n] = @ \cup {Visible(m)}]
    /\ UNCHANGED <<confirmed, alive, crashes, pc, seq, req, cur, acks, floor, acked, answers>>

\* Every client sent all its requests and got its answers: stutter (not a deadlock).
Quiescent ==
    /\ \A c \in Clients : pc[c] = "idle" /\ seq[c] = MaxSeq
    /\ UNCHANGED vars

Next ==
    \/ Quiescent
    \/ \E c \in Clients, w \in WriteIds, b \in Bodies \cup {Delete} : Begin(c, w, b)
    \/ \E c \in Clients, n \in Nodes : Apply(c, n)
    \/ \E c \in Clients : Commit(c) \/ GiveUp(c) \/ CoordinatorCrash(c)
    \/ \E n \in Nodes : Crash(n) \/ Recover(n)
    \/ \E n, m \in Nodes : AntiEntropy(n, m)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ \A n \in Nodes : store[n] \subseteq Heads /\ confirmed[n] \subseteq Heads
    /\ alive \subseteq Nodes
    /\ crashes \in 0 .. MaxCrashes
    /\ pc \in [Clients -> {"idle", "writing", "redriving"}]
    /\ seq \in [Clients -> 0 .. MaxSeq]
    /\ req \in [Clients -> Requests]
    /\ cur \in [Clients -> Heads]
    /\ \A c \in Clients : acks[c] \subseteq Nodes
    /\ acked \subseteq Heads
    /\ answers \subseteq Answers

\* Nothing acknowledged is lost: every read quorum sees each acknowledged head or one
\* that beats it (section 6: "reads see every acknowledged write"; section 12).
AckedReadable ==
    \A h \in acked : \A Q \in SUBSET Nodes :
        Cardinality(Q) = RRead => ~Beats(h, ReadMax(Q))

\* An acknowledged head is held by at least W replicas, for good.
AckedOnW == \A h \in acked : Cardinality(Holders(h)) >= W

\* A fresh write sent after another write was acknowledged gets a higher generation.
GenerationsIncrease ==
    \A c \in Clients : pc[c] = "writing" => cur[c].gen > floor[c]

\* A retry answers the generation the write id got: every 2xx answer of one write id
\* names the same generation.
ReplayAnswersOriginal ==
    \A a, b \in answers :
        (a.wid = b.wid /\ a.status \in {200, 201} /\ b.status \in {200, 201})
            => a.gen = b.gen

\* The tombstone rule: at one generation, a replica never shows a meta when it holds a
\* tombstone of that generation.
DeletesWin ==
    \A n \in Nodes : \A h \in store[n] :
        (h.body = Delete /\ h.gen = Visible(n).gen) => Visible(n).body = Delete

=============================================================================
