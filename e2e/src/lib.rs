//! No library code: the black-box suite lives in `tests/`. It drives a running rdev-api over HTTP
//! only, configured by `RDEV_E2E_URL`, `RDEV_E2E_API_KEY` (an admin key) and `RDEV_E2E_PROJECT`
//! (default `hello`); without `RDEV_E2E_URL` every test prints a note and passes at once.
//! `scripts/e2e` starts a real server on a fake cluster and runs it.
