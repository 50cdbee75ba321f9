//! Test plugin: a valid component that exports something other than the
//! switchyard:plugin contract. The host must refuse it.

wit_bindgen::generate!({
    inline: r#"
        package other:thing@1.0.0;
        world job {
            export run: func(input: string) -> string;
        }
    "#,
});

struct Job;

impl Guest for Job {
    fn run(input: String) -> String {
        input
    }
}

export!(Job);
