//! Hostile sticks (issue 9, cases 1, 2, 8): see the helper branch issue9-stick.
