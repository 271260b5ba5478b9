---------------------------- MODULE ReplicaSelection ----------------------------
(***************************************************************************)
(* Placement of Amberio (contract section 4).                             *)
(*                                                                         *)
(*   slot_id  = int.from_bytes(sha256(path)[0:8], "big") % total_slots    *)
(*   replicas = the sorted node ids rotated left by slot_id % N, first R,  *)
(*              R = min(replicas, N)                                       *)
(*                                                                         *)
(* SHA-256 is abstracted: a path is represented by the 64-bit number its   *)
(* digest starts with, drawn from Digests. The N nodes are 1..N, numbered  *)
(* in the sorted order of their ids. Every node computes placement from    *)
(* the bootstrap state alone (the same Digests, TotalSlots, N, R), so the  *)
(* answer cannot depend on which node is asked: Resolve takes the asking   *)
(* node only to state that.                                                *)
(*                                                                         *)
(* The state machine walks the (node, digest) pairs a client may ask; the  *)
(* invariants are what the rest of the design relies on: R distinct        *)
(* replicas, the rotation start, an even spread (each node holds R of      *)
(* every N consecutive slots), every read quorum of R - W + 1 replicas     *)
(* meets every write quorum of W, and agreement between nodes.             *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets

CONSTANTS
    N,            \* number of nodes
    TotalSlots,   \* replication.total_slots
    ReplicasCfg,  \* replication.replicas (3 by default)
    W,            \* replication.min_write_replicas
    Digests       \* a finite set of 64-bit digest prefixes standing for paths

ASSUME /\ N \in Nat \ {0}
       /\ TotalSlots \in Nat \ {0}
       /\ ReplicasCfg \in Nat \ {0}
       /\ W \in 1 .. ReplicasCfg
       /\ Digests \subseteq Nat

Nodes == 1 .. N
R == IF ReplicasCfg < N THEN ReplicasCfg ELSE N
Slots == 0 .. (TotalSlots - 1)

SlotOf(d) == d % TotalSlots

\* The sorted node list rotated left by s % N.
Rotated(s) == [k \in 1 .. N |-> ((k - 1 + (s % N)) % N) + 1]

ReplicasOf(s) == SubSeq(Rotated(s), 1, R)
ReplicaSet(s) == {ReplicasOf(s)[k] : k \in 1 .. R}

\* What node `asker` answers to slots/resolve for a path with digest d.
Resolve(asker, d) == [slot_id      |-> SlotOf(d),
                      replicas     |-> ReplicasOf(SlotOf(d)),
                      write_quorum |-> W]

ReadQuorum == R - W + 1

VARIABLES asker, digest
vars == <<asker, digest>>

Init == /\ asker \in Nodes
        /\ digest \in Digests

Next == /\ asker' \in Nodes
        /\ digest' \in Digests

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK == /\ asker \in Nodes
          /\ digest \in Digests
          /\ SlotOf(digest) \in Slots

DistinctReplicas ==
    /\ Len(ReplicasOf(SlotOf(digest))) = R
    /\ Cardinality(ReplicaSet(SlotOf(digest))) = R

RotationStart == ReplicasOf(SlotOf(digest))[1] = (SlotOf(digest) % N) + 1

NodesAgree == \A other \in Nodes : Resolve(other, digest) = Resolve(asker, digest)

\* Each node is a replica of exactly R of any N consecutive slots.
EvenSpread ==
    \A n \in Nodes :
        LET s == SlotOf(digest)
        IN  s + N <= TotalSlots =>
                Cardinality({t \in s .. (s + N - 1) : n \in ReplicaSet(t)}) = R

\* Reads of R - W + 1 replicas see every write acknowledged by W of them.
QuorumsIntersect ==
    LET reps == ReplicaSet(SlotOf(digest))
    IN  \A wq, rq \in SUBSET reps :
            (Cardinality(wq) >= W /\ Cardinality(rq) >= ReadQuorum) => wq \cap rq # {}

=============================================================================
