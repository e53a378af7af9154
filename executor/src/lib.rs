pub mod dockerfile;
