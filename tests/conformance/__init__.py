"""Black-box OGC API - Processes conformance suites against real server processes."""
