//! What tollgate decides with nothing started beyond this process: the rules as a user
//! meets them, the header styles and refusal bodies, and hostile input (floods of client IDs,
//! random header values and rules files).

mod headers;
mod hostile;
mod rules;
