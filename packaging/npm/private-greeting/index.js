'use strict';

// What packaging/npm/check requires after the install: the string proves the
// installed module is this one and that it loads.
module.exports = function greet(name) {
  return `hello, ${name}, from a private registry`;
};
