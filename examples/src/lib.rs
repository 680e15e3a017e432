//! Examples of connpool; see the files under examples/.
