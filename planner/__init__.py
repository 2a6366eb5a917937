"""The planner: turns an employee's request into a typed plan of tool steps, and answers from their results."""
