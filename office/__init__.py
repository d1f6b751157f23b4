"""The programme office's views of the go-cluster programme: read models, the
`gocluster clusters|deadlines|serve` commands' output, the HTTP API, the
dashboard and the iCalendar feed. It only reads: nothing here writes to the
store or publishes anything.
"""
