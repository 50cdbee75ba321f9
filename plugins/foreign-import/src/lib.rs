//! Test plugin: a contract 0.2.0 handler that also imports an interface no
//! contract version has (`acme:crm/api@1.0.0`). The host must refuse it,
//! naming that import.

wit_bindgen::generate!({
    inline: r#"
        package test:foreign;

        world foreign {
            import acme:crm/api@1.0.0;
            export switchyard:plugin/handler@0.2.0;
        }

        package acme:crm@1.0.0 {
            interface api {
                sync: func(id: string) -> bool;
            }
        }
    "#,
    path: "../../wit/switchyard-plugin@0.2.0",
    generate_all,
});

use exports::switchyard::plugin::handler::Guest;
use switchyard::plugin::messages::{Failure, Message};

struct Foreign;

impl Guest for Foreign {
    fn handle(message: Message) -> Result<(), Failure> {
        if acme::crm::api::sync(&message.id) {
            Ok(())
        } else {
            Err(Failure::Reject("not synced".into()))
        }
    }
}

export!(Foreign);
