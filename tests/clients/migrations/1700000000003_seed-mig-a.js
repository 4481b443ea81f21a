exports.up = (pgm) => {
  pgm.sql("INSERT INTO mig_a (note) VALUES ('seeded by migration 3')");
};

exports.down = (pgm) => {
  pgm.sql("DELETE FROM mig_a WHERE note = 'seeded by migration 3'");
};
