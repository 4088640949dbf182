"""A throwaway fifth target, "moon", that lives in the test tree only (tests/test_fifth_target.py)."""
