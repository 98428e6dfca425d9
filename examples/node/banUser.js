// The second example of Sails' sails.sockets.leave() page: a service that
// bans a user and unsubscribes each of the user's sockets (one per open
// browser tab) from "privateAdminRoom" by socket id, logging and skipping a
// socket that cannot be unsubscribed (one already disconnected is
// NOT_FOUND/SOCKET_NOT_FOUND). Unlike Sails, each leave has committed
// cluster-wide when its callback runs, whichever gateway holds the socket.

/**
 * banUser is the service of the seed page. User is the app's model: findOne
 * and update, each returning something with exec(cb), as Waterline's do.
 *
 * @required {Number} userId  [the user to ban]
 */
export function banUser(sails, User) {
  return function banUser(options, cb) {
    options = options || {};

    if (options.userId === undefined) {
      return cb(new Error("`userId` is required."));
    }

    User.findOne({ id: options.userId }).exec(function (err, user) {
      if (err) {
        return cb(err);
      }
      if (!user) {
        return cb(new Error("Failed to ban user-- no such user (`" + options.userId + "`) exists!"));
      }

      User.update({ id: options.userId }, { banned: true }).exec(function (err) {
        if (err) {
          return cb(err);
        }

        // If this user record does not currently have any connected sockets tracked, then that means he or she
        // does not have a live connection to our app (via open browser tabs, iPhone apps, etc.).
        // So we can skip unsubscribing his or her sockets (since there aren't any).
        if (user.connectedSocketIds.length === 0) {
          return cb();
        }

        // On the other hand, if the user does have connected sockets, we will call `.leave()` for each one
        // to prevent it from receiving any messages from the "privateAdminRoom".
        each(
          user.connectedSocketIds,
          function eachSocketId(socketId, next) {
            // Note that `req` is not passed in-- instead we use a string socket id.
            // Since this is using a socket id explicitly, instead of inferring one from `req`,
            // we obviously don't have to check `isSocket`.
            sails.sockets.leave(socketId, "privateAdminRoom", function (err) {
              if (err) {
                // If a socket cannot be unsubscribed, ignore it and continue on (but log a warning)
                sails.log.warn("Could not unsubscribe socket `" + socketId + "`.  Error:", err);
                return next();
              }

              return next();
            });
          },
          function afterwards(err) {
            if (err) {
              return cb(err);
            }

            sails.log.info(
              "Sockets:`" + user.connectedSocketIds + "` (probably open browser tabs) were kicked ",
              'from "privateAdminRoom" as a result of banning user (`' + options.userId + "`). " +
                "No more fun, ever!",
            );

            return cb();
          },
        );
      });
    });
  };
}

// each is async.each: iteratee(item, next) for every item at once, then
// done(err) after all called next (or at the first error).
function each(items, iteratee, done) {
  let pending = items.length;
  let failed = false;
  for (const item of items) {
    iteratee(item, (err) => {
      if (failed) return;
      if (err) {
        failed = true;
        return done(err);
      }
      if (--pending === 0) done();
    });
  }
}
