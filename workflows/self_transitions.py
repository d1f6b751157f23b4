"""Internal self-transitions without python-statemachine's event loop.

Most events of a cluster's life leave its state as it is (scheduling, cancelling,
reminders, expiries, results while admitted). For an internal self-transition of a
flat chart's atomic state, `send` exits no state, enters none and leaves the
configuration as it was: what it does is call the transition's `before`, `on` and
`after` callbacks with the event's arguments, and most of its cost is the event
queue and the transition selection around those calls.

Which (state, event) pairs take this path is read from the chart's class once: the
first transition of the state that the event matches has no guard and no validator
(so `send` always takes it, whatever the arguments) and is an internal transition to
the state itself. The callbacks are looked up in the machine's own callback registry
under the transition's keys, with the arguments `send` builds (`EventData`, the
machine's `prepare_event`), so the same methods run in the same order with the same
arguments. Every transition that changes state still goes through `send`.
tests/test_self_transitions.py checks over random stories that both paths give the
same outputs, history and aggregates.
"""

from __future__ import annotations

from typing import Any

from statemachine import StateMachine
from statemachine.event_data import EventData, TriggerData
from statemachine.transition import Transition


def self_transitions(chart: type[StateMachine]) -> dict[tuple[str, str], Transition]:
    """(state id, event id) -> the internal self-transition `send` always takes there."""
    states = list(chart.states)
    if any(t.is_eventless for s in states for t in s.transitions):
        return {}  # an eventless transition may follow any event: every event needs `send`
    table: dict[tuple[str, str], Transition] = {}
    for state in states:
        if state.parent is not None or not state.is_atomic:
            continue  # a child state inherits its ancestors' transitions: not this table's job
        for event in state.transitions.unique_events:
            name = str(event)
            taken = next(t for t in state.transitions if not t.initial and t.match(name))
            unguarded = not list(taken.cond) and not list(taken.validators)
            if unguarded and taken.internal and taken.is_self:
                table[(state.id, name)] = taken
    return table


def run_self_transition(
    machine: StateMachine, transition: Transition, event: str, kwargs: dict[str, Any]
) -> None:
    """What `machine.send(event, **kwargs)` does for `transition`: before, on, after."""
    trigger = TriggerData(machine=machine, event=getattr(machine, event), kwargs=kwargs)
    callbacks = machine._callbacks
    args, during = _arguments(machine, transition, trigger, target_entered=False)
    callbacks.call(transition.before.key, *args, **during)
    configuration = machine.configuration
    during.update(previous_configuration=configuration, new_configuration=configuration)
    callbacks.call(transition.on.key, *args, **during)
    args, after = _arguments(machine, transition, trigger, target_entered=True)
    callbacks.call(transition.after.key, *args, **after)


def _arguments(
    machine: StateMachine, transition: Transition, trigger: TriggerData, *, target_entered: bool
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The callback arguments of the library's engine (`_get_args_kwargs`)."""
    data = EventData(trigger_data=trigger, transition=transition)
    if target_entered:  # a self-transition's target is its source: never None
        data.state = data.target = transition.source
    args, kwargs = data.args, data.extended_kwargs
    for extra in machine._callbacks.call(machine.prepare.key, *args, **kwargs):
        kwargs.update(extra)
    return args, kwargs
