"""The objection API: `/v1/objections` (people file, check and withdraw their own objection) and
`/v1/admin` (operators import historical objections and notices), with their request and
response bodies."""
