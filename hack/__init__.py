"""Developer tooling that is not shipped: the test environment builder lives in `hack.testenv`."""
