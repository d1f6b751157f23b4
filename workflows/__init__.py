"""The membership workflow: statechart, rules, policy and the one handler."""
