//! Test plugin: built against the right package, interface and world names,
//! but its `handle` takes a string and returns nothing. Linking accepts it
//! (the names match); the host must refuse it for its type.

wit_bindgen::generate!({
    inline: r#"
        package switchyard:plugin@0.1.0;
        interface handler {
            handle: func(message: string);
        }
        world plugin {
            export handler;
        }
    "#,
});

use exports::switchyard::plugin::handler::Guest;

struct Wrong;

impl Guest for Wrong {
    fn handle(_message: String) {}
}

export!(Wrong);
