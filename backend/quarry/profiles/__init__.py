"""A project's named model profiles (DESIGN §9): which model a run asks, where, and how."""
