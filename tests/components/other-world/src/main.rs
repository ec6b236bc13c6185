fn main() {
    println!("hello from another world");
}
