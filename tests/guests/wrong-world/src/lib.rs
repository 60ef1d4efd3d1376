//! A real component of a world of its own: not a pier connection-handler,
//! not a wasi:cli command (which pier would serve inetd-style).

wit_bindgen::generate!({
    inline: "package test:elsewhere; world elsewhere { export greet: func() -> string; }",
});

struct Elsewhere;

impl Guest for Elsewhere {
    fn greet() -> String {
        "not a pier handler".into()
    }
}

export!(Elsewhere);
