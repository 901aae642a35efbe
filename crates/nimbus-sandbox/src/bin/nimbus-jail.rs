//! The jail helper on its own, for this crate's tests and for operators who
//! want to inspect a jail by hand; the server runs the same code as
//! `nimbus __jail`.

fn main() {
    nimbus_sandbox::jail::main()
}
