"""The reliability campaign: crash, dependency, pause, clock, size and bad-input faults
against real `gocluster` processes, Apache Kafka and a PostgreSQL server of its own.

    python -m reliability                             # every phase; docs/RELIABILITY.md
    python -m reliability --phases pause,readonly     # some phases (options: --help)

Phases compared with an uninterrupted reference (`gocluster replay` and `tick` of
the same input on a fresh SQLite): crash (SIGKILLs everywhere, PostgreSQL down
and restarted), broker (Apache Kafka killed and restarted on its data),
concurrency (two instances, ticks and events on the same clusters: invariants).

Phases that check bounds and rules needing no reference: pause (SIGSTOP of a
member past its session timeout, inside its transaction, of the relay leader),
readonly (a database refusing writes: identical copies per episode), adversarial
(colliding and hostile ids: no stuck partition, no shared output id), clock
(future-dated and late events: no early or false breach, no output dated after
the service clock), parked (many parked events for one cluster: release time,
no rebalance), soak (table sizes under retention).

The bad-input campaign (reliability/bad_input.py) and the decoder fuzzer
(reliability/fuzz_decoder.py) live here too. Results go to reliability/results/;
the report is docs/RELIABILITY.md. The fast subsets run in
tests/test_reliability.py and tests/test_reliability_faults.py.
"""
