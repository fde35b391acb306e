//! The deployment files and the programs they configure: the compose stack's files checked
//! against each other, its topology run without Docker behind Debian's nginx, nginx and Caddy
//! as gateways asking `/auth`, and the dashboard in headless Chromium.

mod dashboard;
mod files;
mod gateway;
mod stack;
