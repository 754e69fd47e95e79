//! Runs the `end_to_end` example as part of the test suite, so CI proves it works.

#[allow(dead_code)] // The example's `main` is not called here; its `run` is.
#[path = "../examples/end_to_end.rs"]
mod end_to_end;

#[tokio::test]
async fn the_end_to_end_example_succeeds() {
    end_to_end::run().await.unwrap();
}
